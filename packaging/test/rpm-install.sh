# shellcheck shell=bash
# The .rpm's scriptlets run for real: rpm --root install, upgrade and erase in a Debian root.
# Sourced by scripts/package-test.sh, whose helpers (ok, bad, check, expect_eq, log) and variables
# (WORK, RPM1, RPM2, new_root) it uses.

# ---------------------------------------------------------------------------------------------
stage "rpm: scriptlets run for real (rpm --root into a second Debian root)"
# No RPM distribution can be fetched here; a Debian root has the same tools the scriptlets use
# (sh, getent, useradd, no systemd), so installing with rpm --root exercises them as written.
# --nodeps: the Debian root has no RPM database of its own packages.
RROOT="$WORK/rpmroot"
new_root "$RROOT"
rq() { rpm --root "$RROOT" --dbpath /var/lib/rpm "$@"; }
rq --initdb
if rq -i --nodeps "$RPM1" >"$WORK/rpm-install.txt" 2>&1; then ok "rpm -i $(basename "$RPM1")"; else bad "rpm -i"; fi
sed 's/^/    /' "$WORK/rpm-install.txt"
check "rpm %post printed next steps" grep -q 'operator bootstrap' "$WORK/rpm-install.txt"
check "rpm: user netunlockd exists" chroot "$RROOT" getent passwd netunlockd
rmode() { chroot "$RROOT" stat -c '%a %U %G' "$1" 2>/dev/null || echo missing; }
expect_eq "rpm: /var/lib/netunlockd" "$(rmode /var/lib/netunlockd)" "750 netunlockd netunlockd"
expect_eq "rpm: config" "$(rmode /etc/netunlockd/netunlockd.toml)" "640 root netunlockd"
expect_eq "rpm: binary" "$(rmode /usr/bin/netunlockd)" "755 root root"
check "rpm: the installed binary runs" chroot "$RROOT" /usr/bin/netunlockd --version
printf 'stand-in key\n' >"$RROOT/var/lib/netunlockd/kek.bin"
sed -i 's/^#level = "info"/level = "debug"/' "$RROOT/etc/netunlockd/netunlockd.toml"
if rq -U --nodeps "$RPM2" >"$WORK/rpm-upgrade.txt" 2>&1; then ok "rpm -U $(basename "$RPM2")"; else bad "rpm -U"; sed 's/^/    /' "$WORK/rpm-upgrade.txt"; fi
expect_eq "rpm: release after upgrade" "$(rq -q --qf '%{RELEASE}' netunlockd 2>/dev/null)" 2
check "rpm: upgrade kept the edited config (noreplace)" grep -q '^level = "debug"' "$RROOT/etc/netunlockd/netunlockd.toml"
check "rpm: upgrade kept the state" test -s "$RROOT/var/lib/netunlockd/kek.bin"
if rq -e netunlockd >"$WORK/rpm-erase.txt" 2>&1; then ok "rpm -e netunlockd"; else bad "rpm -e"; sed 's/^/    /' "$WORK/rpm-erase.txt"; fi
check "rpm: binary removed on erase" test ! -e "$RROOT/usr/bin/netunlockd"
check "rpm: erase moved the state out of /var/lib" test ! -e "$RROOT/var/lib/netunlockd"
check "rpm: erase says where the state was kept" grep -q 'erase kept the Network Unlock key.*/var/backups/netunlockd/state-' "$WORK/rpm-erase.txt"
check "rpm: erase kept the state under /var/backups/netunlockd" sh -c "test -s $RROOT/var/backups/netunlockd/state-*/kek.bin"
expect_eq "rpm: /var/backups/netunlockd is private" "$(stat -c %a "$RROOT/var/backups/netunlockd" 2>/dev/null)" 700
check "rpm: edited config saved as .rpmsave" test -f "$RROOT/etc/netunlockd/netunlockd.toml.rpmsave"

