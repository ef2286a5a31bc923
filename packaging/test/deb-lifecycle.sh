# shellcheck shell=bash
# Upgrade to revision 2 with data kept, then remove (state kept) and purge (state gone).
# Sourced by scripts/package-test.sh, whose helpers (ok, bad, check, expect_eq, log) and variables
# (ROOT, DEB2, UPSTREAM, CER, TOKEN and the serve helpers) it uses.

# ---------------------------------------------------------------------------------------------
stage "deb: upgrade to revision 2 with data kept"
fingerprint() { # what must survive an upgrade (and a purge, moved aside); STATE_DIR: where it is
    (cd "$ROOT${STATE_DIR:-/var/lib/netunlockd}" && sha256sum network-unlock/network-unlock.cer network-unlock/network-unlock.key \
        kek.bin escrow.db 2>&1)
}
before="$(fingerprint)"
THUMB_BEFORE="$(sha1sum "$ROOT$CER" | cut -d' ' -f1)"
# An operator edit to the conffile, which the upgrade must keep without asking.
sed -i 's/^#level = "info"/level = "info,netunlock=debug"/' "$ROOT/etc/netunlockd/netunlockd.toml"
if in_root dpkg -i "/tmp/pkgs/$(basename "$DEB2")" >"$WORK/upgrade.txt" 2>&1 </dev/null; then
    ok "dpkg -i $(basename "$DEB2") (upgrade)"
else
    bad "dpkg -i $(basename "$DEB2") (upgrade)"
    sed 's/^/    /' "$WORK/upgrade.txt"
fi
expect_eq "version after upgrade" "$(in_root dpkg-query -W -f='${Version}' netunlockd 2>/dev/null)" "$UPSTREAM-2"
check "upgrade did not print the first-install next steps" sh -c "! grep -q 'Next steps' '$WORK/upgrade.txt'"
expect_eq "keys, KEK and database unchanged by the upgrade" "$(fingerprint)" "$before"
check "operator's conffile edit kept" grep -q '^level = "info,netunlock=debug"' "$ROOT/etc/netunlockd/netunlockd.toml"
expect_eq "config permissions kept" "$(mode_of /etc/netunlockd/netunlockd.toml)" "640 root netunlockd"
expect_eq "state dir kept" "$(mode_of /var/lib/netunlockd)" "750 netunlockd netunlockd"
if start_daemon "$WORK/serve2.log"; then
    expect_eq "unlock certificate thumbprint survives the upgrade" "$(sha1sum "$ROOT$CER" | cut -d' ' -f1)" "$THUMB_BEFORE"
    probe v4 "probe v4 after upgrade unlocks with the pre-upgrade certificate"
    if [[ -n "$TOKEN" ]]; then
        if NETUNLOCKD_TOKEN="$TOKEN" ip netns exec "$NS_SRV" chroot "$ROOT" /usr/bin/netunlockd operator list \
                --config /etc/netunlockd/netunlockd.toml >"$WORK/operators.txt" 2>&1 \
                && grep -q admin "$WORK/operators.txt"; then
            ok "escrow database survived: the pre-upgrade admin token lists the operators over HTTPS"
        else
            bad "pre-upgrade admin token works after the upgrade"
            sed 's/^/    /' "$WORK/operators.txt"
        fi
    fi
    stop_daemon "$WORK/serve2.log"
fi
if run_in_srv "$WORK/audit.txt" /usr/bin/netunlockd audit verify --config /etc/netunlockd/netunlockd.toml; then
    ok "audit chain intact after upgrade: $(head -n1 "$WORK/audit.txt")"
else
    bad "audit verify after upgrade"
    sed 's/^/    /' "$WORK/audit.txt"
fi

# ---------------------------------------------------------------------------------------------
stage "deb: remove (state kept), purge (state moved aside to /var/backups/netunlockd)"
after_upgrade="$(fingerprint)"
if in_root dpkg -r netunlockd >"$WORK/remove.txt" 2>&1 </dev/null; then ok "dpkg -r netunlockd"; else bad "dpkg -r netunlockd"; sed 's/^/    /' "$WORK/remove.txt"; fi
check "binary removed" test ! -e "$ROOT/usr/bin/netunlockd"
check "unit removed" test ! -e "$ROOT/usr/lib/systemd/system/netunlockd.service"
expect_eq "keys, KEK and database kept on remove" "$(fingerprint)" "$after_upgrade"
check "conffile kept on remove" test -f "$ROOT/etc/netunlockd/netunlockd.toml"
check "user kept on remove" sh -c "chroot '$ROOT' getent passwd netunlockd"
if in_root dpkg -P netunlockd >"$WORK/purge.txt" 2>&1 </dev/null; then ok "dpkg -P netunlockd"; else bad "dpkg -P netunlockd"; sed 's/^/    /' "$WORK/purge.txt"; fi
check "state directory gone from /var/lib on purge" test ! -e "$ROOT/var/lib/netunlockd"
check "purge says where the state was kept" grep -q 'purge kept the Network Unlock key.*/var/backups/netunlockd/state-' "$WORK/purge.txt"
kept_dir="$(ls -d "$ROOT"/var/backups/netunlockd/state-* 2>/dev/null | head -n1)"
expect_eq "/var/backups/netunlockd is private" "$(stat -c %a "$ROOT/var/backups/netunlockd" 2>/dev/null)" 700
if [[ -n "$kept_dir" ]]; then
    expect_eq "purge kept keys, KEK and database intact" "$(STATE_DIR="${kept_dir#"$ROOT"}" fingerprint)" "$after_upgrade"
else
    bad "purge kept no copy of the state under /var/backups/netunlockd"
fi
check "config directory gone on purge" test ! -e "$ROOT/etc/netunlockd"
check "config statoverride gone on purge" sh -c "! chroot '$ROOT' dpkg-statoverride --list /etc/netunlockd/netunlockd.toml"
check "user kept on purge (Debian policy; documented in install.md)" sh -c "chroot '$ROOT' getent passwd netunlockd"
expect_eq "package state after purge" "$(in_root dpkg-query -W -f='${Status}' netunlockd 2>/dev/null || echo not-installed)" not-installed

