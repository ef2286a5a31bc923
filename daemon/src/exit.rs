//! Exit codes of every command, one meaning each, so scripts and monitoring can tell them apart.
//! The man page's EXIT STATUS section is generated from [`TABLE`].

use std::process::ExitCode;

/// Done; for checks: nothing found.
pub(crate) const SUCCESS: u8 = 0;
/// The command failed; the message on stderr says why and what to do.
pub(crate) const FAILURE: u8 = 1;
/// The command line is wrong (unknown option, missing or invalid argument); clap's own code.
pub(crate) const USAGE: u8 = 2;
/// `status`: the daemon answered and reports a failed check. `audit verify`: the chain is broken.
pub(crate) const UNHEALTHY: u8 = 3;
/// `status`: the daemon's health endpoint cannot be reached (not running, wrong address).
pub(crate) const UNREACHABLE: u8 = 4;
/// `certs inspect`: the certificate has warnings (something that would stop Network Unlock).
pub(crate) const WARNINGS: u8 = 5;
/// `probe`: no valid Network Unlock reply arrived.
pub(crate) const NO_UNLOCK: u8 = 6;

/// (code, meaning) for the man page and `--help`.
pub(crate) const TABLE: &[(u8, &str)] = &[
    (SUCCESS, "success; for checks, nothing was found"),
    (
        FAILURE,
        "failure: the message on standard error says what went wrong and what to do",
    ),
    (
        USAGE,
        "usage error: unknown option, missing or invalid argument",
    ),
    (
        UNHEALTHY,
        "status: the daemon answered and a check failed; audit verify: the audit chain is broken",
    ),
    (
        UNREACHABLE,
        "status: the daemon's health endpoint could not be reached",
    ),
    (
        WARNINGS,
        "certs inspect: the certificate has warnings that would stop Network Unlock",
    ),
    (
        NO_UNLOCK,
        "probe: no reply that decrypts to the probe's network key",
    ),
];

pub(crate) fn code(c: u8) -> ExitCode {
    ExitCode::from(c)
}

/// The EXIT STATUS text shown at the end of `netunlockd --help`.
pub(crate) fn help_text() -> String {
    let mut s = String::from("Exit status:\n");
    for (code, meaning) in TABLE {
        s.push_str(&format!("  {code}  {meaning}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_one_meaning() {
        let mut codes: Vec<u8> = TABLE.iter().map(|(c, _)| *c).collect();
        codes.sort_unstable();
        codes.dedup();
        assert_eq!(codes.len(), TABLE.len());
        assert_eq!(codes, (0..=6).collect::<Vec<u8>>());
    }
}
