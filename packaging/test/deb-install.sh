# shellcheck shell=bash
# The Debian root (debootstrap, cached) and a first install of the .deb in it, without systemd.
# Sourced by scripts/package-test.sh, whose helpers (ok, bad, check, expect_eq, log) and variables
# (WORK, CACHE, MIRROR, DEB1, DEB2, VERSION, UPSTREAM; sets ROOT, TARBALL, new_root, mode_of) it uses.

# ---------------------------------------------------------------------------------------------
stage "Debian bookworm root (debootstrap minbase, cached)"
# The package's own dependencies beyond minbase (passwd is in it) are included, so dpkg -i works
# offline. The tarball name changes with that list, so an old cache is not reused by mistake.
ROOT_INCLUDE="procps"
TARBALL="$CACHE/bookworm-minbase+${ROOT_INCLUDE//,/+}.tar.gz"
if [[ ! -s "$TARBALL" ]]; then
    log "no cached root in $TARBALL: running debootstrap (about 2 minutes)"
    mkdir -p "$CACHE"
    start=$SECONDS
    debootstrap --variant=minbase --include="$ROOT_INCLUDE" bookworm "$WORK/bootstrap" "$MIRROR" >"$WORK/debootstrap.log" 2>&1 \
        || { tail -20 "$WORK/debootstrap.log"; die "debootstrap failed"; }
    tar -C "$WORK/bootstrap" -czf "$TARBALL.tmp" . && mv "$TARBALL.tmp" "$TARBALL"
    rm -rf --one-file-system "$WORK/bootstrap"
    log "debootstrap + cache took $((SECONDS - start)) s"
fi
new_root() { # <dir> [tarball]: a fresh copy of a cached root (default: the minbase one)
    mkdir -p "$1"
    tar -C "$1" -xzf "${2:-$TARBALL}"
}
ROOT="$WORK/root"
new_root "$ROOT"
mkdir -p "$ROOT/tmp/pkgs"
cp "$DEB1" "$DEB2" "$ROOT/tmp/pkgs/"
in_root() { chroot "$ROOT" "$@"; }
check "the root has no systemd (maintainer scripts must not need it)" test ! -e "$ROOT/usr/bin/systemctl"

# ---------------------------------------------------------------------------------------------
stage "deb: install"
if in_root dpkg -i "/tmp/pkgs/$(basename "$DEB1")" >"$WORK/install.txt" 2>&1 </dev/null; then
    ok "dpkg -i $(basename "$DEB1")"
else
    bad "dpkg -i $(basename "$DEB1")"
fi
sed 's/^/    /' "$WORK/install.txt"
check "postinst printed where the .cer will be" grep -q '/var/lib/netunlockd/network-unlock/network-unlock.cer' "$WORK/install.txt"
check "postinst printed how to get the first admin token" grep -q 'netunlockd operator bootstrap' "$WORK/install.txt"
check "postinst printed systemctl enable --now" grep -q 'systemctl enable --now netunlockd' "$WORK/install.txt"
expect_eq "dpkg status" "$(in_root dpkg-query -W -f='${Status} ${Version}' netunlockd 2>/dev/null)" "install ok installed $VERSION"

pw="$(in_root getent passwd netunlockd || true)"
check "user netunlockd exists" test -n "$pw"
IFS=: read -r _ _ uid gid _ home shell <<<"$pw"
check "user netunlockd is a system user (uid $uid < 1000)" test "${uid:-1000}" -lt 1000
expect_eq "user home" "$home" /var/lib/netunlockd
expect_eq "user shell" "$shell" /usr/sbin/nologin
expect_eq "group netunlockd is the user's primary group" "$(in_root getent group netunlockd | cut -d: -f3)" "$gid"

# stat inside the root: owner names must come from the root's /etc/passwd, not the host's.
mode_of() { chroot "$ROOT" stat -c '%a %U %G' "$1" 2>/dev/null || echo missing; }
expect_eq "/var/lib/netunlockd" "$(mode_of /var/lib/netunlockd)" "750 netunlockd netunlockd"
expect_eq "/etc/netunlockd/netunlockd.toml" "$(mode_of /etc/netunlockd/netunlockd.toml)" "640 root netunlockd"
expect_eq "/usr/bin/netunlockd" "$(mode_of /usr/bin/netunlockd)" "755 root root"
for f in /usr/lib/systemd/system/netunlockd.service /usr/lib/sysusers.d/netunlockd.conf \
    /usr/lib/tmpfiles.d/netunlockd.conf /usr/share/man/man8/netunlockd.8.gz /usr/share/man/man8/netunlockd-serve.8.gz \
    /usr/share/bash-completion/completions/netunlockd /usr/share/zsh/vendor-completions/_netunlockd \
    /usr/share/fish/vendor_completions.d/netunlockd.fish /usr/share/doc/netunlockd/install.md \
    /usr/share/doc/netunlockd/hardening.md /usr/share/doc/netunlockd/operations.md \
    /usr/share/netunlockd/agent/netunlockd-agent.ps1 /usr/share/doc/netunlockd/copyright \
    /usr/share/doc/netunlockd/changelog.Debian.gz /usr/share/netunlockd/examples/credentials.conf \
    /usr/share/netunlockd/examples/prometheus-alerts.yml /usr/lib/firewalld/services/netunlockd.xml; do
    expect_eq "$f" "$(mode_of "$f")" "644 root root"
done
check "the copyright file names Apache-2.0 and points at its common text" \
    grep -q '/usr/share/common-licenses/Apache-2.0' "$ROOT/usr/share/doc/netunlockd/copyright"
check "conffile registered: /etc/netunlockd/netunlockd.toml" \
    sh -c "chroot '$ROOT' dpkg-query -W -f='\${Conffiles}' netunlockd | grep -q '/etc/netunlockd/netunlockd.toml'"
check "netunlockd --version" sh -c "chroot '$ROOT' /usr/bin/netunlockd --version | grep -qF '$UPSTREAM'"
# The daemon's own user can read the packaged config; nothing is created by a check.
if in_root setpriv --reuid=netunlockd --regid=netunlockd --init-groups \
        /usr/bin/netunlockd config check --config /etc/netunlockd/netunlockd.toml >"$WORK/check.txt" 2>&1; then
    ok "netunlockd config check (as netunlockd) on the packaged config"
else
    bad "netunlockd config check (as netunlockd) on the packaged config"
fi
sed 's/^/    /' "$WORK/check.txt"
check "config check created nothing in /var/lib/netunlockd" test -z "$(ls -A "$ROOT/var/lib/netunlockd")"

