//! Process hardening and refusal of unsafe state at start-up.

use std::path::Path;

use anyhow::Result;

/// A panic anywhere aborts the process: a daemon with a dead task must not keep running as a
/// ghost; systemd's `Restart=on-failure` brings it back. (The release profile keeps unwinding so
/// tests share its build; this hook gives the daemon abort semantics regardless.)
pub(crate) fn install_abort_on_panic() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default(info);
        std::process::abort();
    }));
}

/// Keeps private keys, CK/SK and recovery passwords out of core dumps and away from ptrace by
/// other processes of the same user.
pub(crate) fn make_undumpable() -> Result<()> {
    nix::sys::prctl::set_dumpable(false).map_err(|e| {
        anyhow::anyhow!("cannot mark the process non-dumpable (prctl PR_SET_DUMPABLE): {e}")
    })?;
    let no_core = nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_CORE, 0, 0);
    if let Err(e) = no_core {
        tracing::warn!("cannot disable core dumps (RLIMIT_CORE): {e}");
    }
    Ok(())
}

/// Root works (the README's first try runs the binary with sudo) but is more than the daemon needs;
/// daily operation belongs to the packaged unit, which runs as `netunlockd` with only
/// CAP_NET_BIND_SERVICE.
pub(crate) fn warn_if_root() {
    if nix::unistd::geteuid().is_root() {
        tracing::warn!(
            "running as root: fine for a first try; for daily operation install the .deb or .rpm and use \
             `systemctl enable --now netunlockd` (the unit runs as the netunlockd user with only CAP_NET_BIND_SERVICE)"
        );
    }
}

/// Files the daemon and the local CLI tools create in the state directory (the SQLite database
/// and its WAL, the DUID, keys) hold or guard secrets: create them 0600 whatever umask the caller
/// had. Files meant to be shared (.cer, .pem) set their mode explicitly and stay readable.
pub(crate) fn private_umask() {
    nix::sys::stat::umask(nix::sys::stat::Mode::from_bits_truncate(0o077));
}

/// A private key file must not be readable or writable by group or others. The rule lives in
/// `certs`; this names which file the operator has to fix.
pub(crate) fn check_private_file(path: &Path, what: &str) -> Result<()> {
    certs::check_private_key_permissions(path).map_err(|e| anyhow::anyhow!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn group_or_world_access_to_a_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("k.key");
        std::fs::write(&key, b"x").unwrap();
        for (mode, ok) in [
            (0o600, true),
            (0o400, true),
            (0o640, false),
            (0o644, false),
            (0o606, false),
            (0o620, false),
        ] {
            std::fs::set_permissions(&key, std::fs::Permissions::from_mode(mode)).unwrap();
            let r = check_private_file(&key, "key");
            assert_eq!(r.is_ok(), ok, "mode {mode:o}: {r:?}");
            if let Err(e) = r {
                assert!(e.to_string().contains("chmod 600"), "{e}");
            }
        }
        let missing = check_private_file(&dir.path().join("nope"), "key").unwrap_err();
        assert!(
            missing.to_string().starts_with("key: cannot read"),
            "{missing}"
        );
    }
}
