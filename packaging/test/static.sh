# shellcheck shell=bash
# Checks of the built files: lintian, rpmlint, the unit (verify, security), sysusers/tmpfiles,
# Prometheus rules, and the .rpm's contents, modes, config flags and scriptlets.
# Sourced by scripts/package-test.sh, whose helpers (ok, bad, check, expect_eq, log) and variables
# (WORK, DEB1, RPM1, UPSTREAM) it uses.

# ---------------------------------------------------------------------------------------------
stage "lint: lintian, rpmlint, package synopsis"
synopsis="$(dpkg-deb -f "$DEB1" Description | head -n1)"
if ((${#synopsis} < 80)); then ok "deb synopsis under 80 characters: $synopsis"; else bad "deb synopsis is ${#synopsis} characters: $synopsis"; fi
# Overrides ship inside the .deb (/usr/share/lintian/overrides/netunlockd), each with its reason.
if lintian --fail-on error --display-info --tag-display-limit 0 "$DEB1" >"$WORK/lintian.txt" 2>&1; then
    ok "lintian: no errors"
else
    bad "lintian reports errors"
fi
sed 's/^/    /' "$WORK/lintian.txt"
if rpmlint -c packaging/rpm/rpmlint.toml "$RPM1" >"$WORK/rpmlint.txt" 2>&1; then
    ok "rpmlint: no errors"
else
    bad "rpmlint reports errors"
fi
sed 's/^/    /' "$WORK/rpmlint.txt"

# ---------------------------------------------------------------------------------------------
stage "systemd unit"
UNITROOT="$WORK/unitroot"
mkdir -p "$UNITROOT/bin"
dpkg-deb -x "$DEB1" "$UNITROOT"
# Verified inside the packaged layout (so ExecStart= finds /usr/bin/netunlockd), completed with the
# host's standard units (sysinit.target, ...) and /bin/kill for ExecReload=. Man pages are checked as
# package contents below, since `--man=yes` asks the host's man database. Any output (an unknown
# key, a bad value) fails the check: verify itself exits 0 on those.
cp -an /usr/lib/systemd/system/. "$UNITROOT/usr/lib/systemd/system/"
cp /bin/kill "$UNITROOT/bin/kill"
if systemd-analyze verify --man=no --root="$UNITROOT" /usr/lib/systemd/system/netunlockd.service \
        >"$WORK/verify.txt" 2>&1 && ! grep -q . "$WORK/verify.txt"; then
    ok "systemd-analyze verify: clean"
else
    bad "systemd-analyze verify"
    sed 's/^/    /' "$WORK/verify.txt"
fi
systemd-analyze security --offline=true --threshold=20 systemd/netunlockd.service >"$WORK/security.txt" 2>&1 \
    && sec_rc=0 || sec_rc=$?
score="$(grep -o 'Overall exposure level for netunlockd.service: [0-9.]* [A-Z]*' "$WORK/security.txt" || true)"
if ((sec_rc == 0)) && [[ -n "$score" ]]; then ok "systemd-analyze security: ${score#Overall }"; else bad "systemd-analyze security: ${score:-no score} (threshold 2.0)"; fi
grep '✗' "$WORK/security.txt" | sed 's/^/    /' || true
check "shipped unit equals systemd/netunlockd.service" \
    cmp "$UNITROOT/usr/lib/systemd/system/netunlockd.service" systemd/netunlockd.service
# The sysusers and tmpfiles snippets do what they say, applied by the real tools to a scratch root.
SU="$WORK/sysusers-root"
mkdir -p "$SU/etc" "$SU/var/lib"
printf 'root:x:0:0:root:/root:/bin/sh\n' >"$SU/etc/passwd"
printf 'root:x:0:\n' >"$SU/etc/group"
cp packaging/netunlockd.sysusers "$WORK/netunlockd.conf"
systemd-sysusers --root="$SU" "$WORK/netunlockd.conf" >/dev/null 2>&1 || true
check "sysusers: creates user netunlockd" grep -q '^netunlockd:x:[0-9]*:[0-9]*:netunlockd daemon:/var/lib/netunlockd:' "$SU/etc/passwd"
check "sysusers: creates group netunlockd" grep -q '^netunlockd:x:' "$SU/etc/group"
cp packaging/netunlockd.tmpfiles "$WORK/tmpfiles.conf"
systemd-tmpfiles --root="$SU" --create "$WORK/tmpfiles.conf" >/dev/null 2>&1 || true
expect_eq "tmpfiles: /var/lib/netunlockd mode" "$(stat -c %a "$SU/var/lib/netunlockd" 2>/dev/null)" 750

# ---------------------------------------------------------------------------------------------
stage "prometheus rules"
check "promtool check rules packaging/prometheus/alerts.yml" promtool check rules packaging/prometheus/alerts.yml
if (cd packaging/prometheus && promtool test rules alerts_test.yml) >"$WORK/promtest.txt" 2>&1; then
    ok "promtool test rules (alerts fire and stay quiet as intended)"
else
    bad "promtool test rules"
    sed 's/^/    /' "$WORK/promtest.txt"
fi

# ---------------------------------------------------------------------------------------------
stage "rpm: contents, modes, config flags, scriptlets"
rpm -qp --queryformat '%{NAME} %{VERSION} %{RELEASE}\n' "$RPM1" >"$WORK/rpm-nvr.txt" 2>/dev/null || true
expect_eq "rpm name/version/release" "$(cat "$WORK/rpm-nvr.txt")" "netunlockd $UPSTREAM 1"
rpm -qlp "$RPM1" >"$WORK/rpm-files.txt" 2>/dev/null || true
for f in /usr/bin/netunlockd /usr/lib/systemd/system/netunlockd.service /usr/lib/sysusers.d/netunlockd.conf \
    /usr/lib/tmpfiles.d/netunlockd.conf /etc/netunlockd/netunlockd.toml /usr/share/man/man8/netunlockd.8.gz \
    /usr/share/man/man8/netunlockd-serve.8.gz /usr/share/bash-completion/completions/netunlockd \
    /usr/share/zsh/site-functions/_netunlockd /usr/share/fish/vendor_completions.d/netunlockd.fish \
    /usr/share/doc/netunlockd/install.md /usr/share/doc/netunlockd/hardening.md \
    /usr/share/doc/netunlockd/operations.md /usr/share/netunlockd/agent/netunlockd-agent.ps1 \
    /usr/share/netunlockd/examples/prometheus-alerts.yml /usr/share/netunlockd/examples/credentials.conf \
    /usr/lib/firewalld/services/netunlockd.xml /usr/share/licenses/netunlockd/LICENSE \
    /etc/netunlockd /var/lib/netunlockd /usr/share/doc/netunlockd /usr/share/netunlockd; do
    check "rpm -qlp lists $f" grep -qx "$f" "$WORK/rpm-files.txt"
done
# --dump: path size mtime digest mode owner group isconfig isdoc rdev symlink
rpm -qp --dump "$RPM1" >"$WORK/rpm-dump.txt" 2>/dev/null || true
dump_field() { awk -v p="$1" -v f="$2" '$1 == p { print $f }' "$WORK/rpm-dump.txt"; }
expect_eq "rpm: binary mode" "$(dump_field /usr/bin/netunlockd 5)" 0100755
expect_eq "rpm: binary owner" "$(dump_field /usr/bin/netunlockd 6):$(dump_field /usr/bin/netunlockd 7)" root:root
expect_eq "rpm: config mode" "$(dump_field /etc/netunlockd/netunlockd.toml 5)" 0100640
expect_eq "rpm: config owner" "$(dump_field /etc/netunlockd/netunlockd.toml 6):$(dump_field /etc/netunlockd/netunlockd.toml 7)" root:netunlockd
expect_eq "rpm: config is %config" "$(dump_field /etc/netunlockd/netunlockd.toml 8)" 1
expect_eq "rpm: unit mode" "$(dump_field /usr/lib/systemd/system/netunlockd.service 5)" 0100644
expect_eq "rpm: man page is %doc" "$(dump_field /usr/share/man/man8/netunlockd.8.gz 9)" 1
flags="$(rpm -qp --queryformat '[%{FILEFLAGS:fflags} %{FILENAMES}\n]' "$RPM1" 2>/dev/null | awk '$2 == "/etc/netunlockd/netunlockd.toml" { print $1 }')"
expect_eq "rpm: config is %config(noreplace)" "$flags" cn
rpm -qp --scripts "$RPM1" >"$WORK/rpm-scripts.txt" 2>/dev/null || true
check "rpm %pre creates the user via systemd-sysusers" grep -q 'systemd-sysusers --replace=/usr/lib/sysusers.d/netunlockd.conf' "$WORK/rpm-scripts.txt"
check "rpm %pre has a useradd fallback" grep -q 'useradd -r -g netunlockd' "$WORK/rpm-scripts.txt"
check "rpm %post creates the state dir" grep -q 'systemd-tmpfiles --create netunlockd.conf' "$WORK/rpm-scripts.txt"
check "rpm %post applies the preset on install" grep -q 'systemctl --no-reload preset netunlockd.service' "$WORK/rpm-scripts.txt"
check "rpm %preun disables and stops on erase" grep -q 'disable --now netunlockd.service' "$WORK/rpm-scripts.txt"
check "rpm %postun restarts on upgrade" grep -q 'try-restart netunlockd.service' "$WORK/rpm-scripts.txt"
for s in preinstall postinstall preuninstall postuninstall; do
    check "rpm has a $s scriptlet" grep -q "^$s scriptlet" "$WORK/rpm-scripts.txt"
done
rpm -qp --qf '[%{REQUIRENEVRS} %{REQUIREFLAGS:deptype}\n]' "$RPM1" >"$WORK/rpm-deptypes.txt" 2>/dev/null || true
for tool in /usr/sbin/useradd /usr/sbin/groupadd /usr/bin/getent; do
    check "rpm Requires(pre): $tool" grep -qE "^$tool pre" "$WORK/rpm-deptypes.txt"
done
expect_eq "rpm owns /var/lib/netunlockd (mode, owner)" "$(dump_field /var/lib/netunlockd 5) $(dump_field /var/lib/netunlockd 6):$(dump_field /var/lib/netunlockd 7)" "040750 netunlockd:netunlockd"
expect_eq "rpm: LICENSE is %license" "$(rpm -qpL "$RPM1" 2>/dev/null)" /usr/share/licenses/netunlockd/LICENSE
check "rpm has a %changelog" sh -c "rpm -qp --changelog '$RPM1' | grep -q 'First release'"
check "rpm has a long description" sh -c "rpm -qp --qf '%{DESCRIPTION}' '$RPM1' | grep -q 'TPM+PIN'"
check "rpm has a URL" sh -c "rpm -qp --qf '%{URL}' '$RPM1' | grep -q '^https://'"
for port in 'udp" port="67"' 'udp" port="547"' 'tcp" port="8443"'; do
    check "firewalld service opens ${port//\"/}" grep -qF "$port" packaging/firewalld/netunlockd.xml
done
rpm -qpR "$RPM1" >"$WORK/rpm-requires.txt" 2>/dev/null || true
check "rpm requires /usr/sbin/useradd" grep -q '^/usr/sbin/useradd' "$WORK/rpm-requires.txt"
check "rpm requires libc" grep -q '^libc.so.6' "$WORK/rpm-requires.txt"

