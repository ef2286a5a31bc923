#!/usr/bin/env bash
# The CI package stage (called by scripts/test after the test suite):
#   1. build the .deb and .rpm once (scripts/build-packages.sh), plus a revision-2 rebuild for upgrades
#   2. lintian and rpmlint (zero errors), systemd-analyze verify + security (exposure <= 2.0),
#      promtool check/test rules on the shipped Prometheus alerts
#   3. .rpm contents, modes, config flags and scriptlets (rpm -qlp / --dump / --scripts)
#   4. .deb install test in a Debian bookworm minbase root (debootstrap, no systemd): user, dirs,
#      modes, conffile, `config check`, `serve` in a network namespace unlocked by `probe` from another
#      namespace over a veth pair, upgrade with data kept, remove (state kept), purge (state gone)
#   5. the .deb under a real systemd (systemd-nspawn boot): the packaged unit starts (Type=notify),
#      runs sandboxed as netunlockd with CAP_NET_BIND_SERVICE only, unlocks a probe, reloads, stops
#   6. .rpm scriptlets run for real: rpm --root install / upgrade / erase into a second such root
#
# Needs root (chroot, ip netns). Installs lintian, rpmlint, rpm, debootstrap, systemd and prometheus
# (promtool) with apt-get when missing. The debootstrap root is cached as a tarball in
# $NETUNLOCKD_CI_CACHE (default /var/cache/netunlockd-ci); the first run takes ~2 minutes to make it.
# Prints "N passed, N failed" at the end; exits non-zero on any failure.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"

CACHE="${NETUNLOCKD_CI_CACHE:-/var/cache/netunlockd-ci}"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
DIST_DIR="$REPO/dist"
PASS=0
FAIL=0

log() { printf 'package-test: %s\n' "$*"; }
stage() { printf '\n--- %s (%s)\n' "$*" "$(date -u +%H:%M:%S)"; }
ok() { PASS=$((PASS + 1)); printf '  ok   %s\n' "$*"; }
bad() { FAIL=$((FAIL + 1)); printf '  FAIL %s\n' "$*"; }
# check "<description>" <command...>: one assertion, counted; never aborts the script.
check() {
    local what="$1"
    shift
    if "$@" >/dev/null 2>&1; then ok "$what"; else bad "$what"; fi
}
# expect_eq "<description>" <actual> <expected>
expect_eq() {
    if [[ "$2" == "$3" ]]; then ok "$1"; else bad "$1 (got '$2', want '$3')"; fi
}
die() { printf 'package-test: error: %s\n' "$*" >&2; exit 1; }

[[ "$(id -u)" == 0 ]] || die "needs root (chroot, ip netns); run it as root or via .ci/run"

# ---------------------------------------------------------------------------------------------
stage "tools"
need=()
command -v lintian >/dev/null || need+=(lintian)
command -v rpmlint >/dev/null || need+=(rpmlint)
command -v rpm >/dev/null || need+=(rpm)
command -v debootstrap >/dev/null || need+=(debootstrap)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v promtool >/dev/null || need+=(prometheus)
command -v ip >/dev/null || need+=(iproute2)
if ((${#need[@]})); then
    log "installing ${need[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi

WORK="$(mktemp -d /tmp/netunlockd-pkgtest.XXXXXX)"
TAG="$$"
NS_SRV="nu-srv-$TAG"
NS_CLI="nu-cli-$TAG"
IF_SRV="nus$TAG"
IF_CLI="nuc$TAG"
DAEMON_PID=""
cleanup() {
    if [[ -n "$DAEMON_PID" ]] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -KILL "$DAEMON_PID" 2>/dev/null || true
        wait "$DAEMON_PID" 2>/dev/null || true
    fi
    ip netns del "$NS_SRV" 2>/dev/null || true
    ip netns del "$NS_CLI" 2>/dev/null || true
    # The roots have no mounts left: /proc and /sys are only mounted inside `ip netns exec`'s
    # private mount namespace, which ends with the daemon.
    rm -rf --one-file-system "$WORK"
}
trap cleanup EXIT

# ---------------------------------------------------------------------------------------------
stage "build packages"
DIST_DIR="$DIST_DIR" bash scripts/build-packages.sh
DEB1="$(ls "$DIST_DIR"/netunlockd_*.deb)"
RPM1="$(ls "$DIST_DIR"/netunlockd-*.rpm)"
# The upgrade target: the same binary, packaged again with revision 2 (cargo deb is a no-op build).
DIST_DIR="$WORK/dist2" DEB_REVISION=2 bash scripts/build-packages.sh
DEB2="$(ls "$WORK"/dist2/netunlockd_*.deb)"
RPM2="$(ls "$WORK"/dist2/netunlockd-*.rpm)"
VERSION="$(dpkg-deb -f "$DEB1" Version)"
UPSTREAM="${VERSION%-*}"
log "built $DEB1 ($VERSION), $RPM1, and revision 2 for the upgrade test"

# ---------------------------------------------------------------------------------------------
stage "lint: lintian, rpmlint"
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
    /usr/share/doc/netunlockd/operations.md /usr/share/doc/netunlockd/agent/netunlockd-agent.ps1 \
    /usr/share/doc/netunlockd/examples/prometheus-alerts.yml; do
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
rpm -qpR "$RPM1" >"$WORK/rpm-requires.txt" 2>/dev/null || true
check "rpm requires /usr/sbin/useradd" grep -q '^/usr/sbin/useradd' "$WORK/rpm-requires.txt"
check "rpm requires libc" grep -q '^libc.so.6' "$WORK/rpm-requires.txt"

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
    /usr/share/doc/netunlockd/agent/netunlockd-agent.ps1 /usr/share/doc/netunlockd/copyright \
    /usr/share/doc/netunlockd/changelog.Debian.gz /usr/share/doc/netunlockd/examples/credentials.conf; do
    expect_eq "$f" "$(mode_of "$f")" "644 root root"
done
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

# ---------------------------------------------------------------------------------------------
stage "deb: serve in a network namespace, unlock with probe from another"
# Test hosts of our own: two namespaces joined by a veth pair, documentation addresses only.
for ns in "$NS_SRV" "$NS_CLI"; do
    ip netns add "$ns"
    ip -n "$ns" link set lo up
    # No duplicate address detection: the link-local addresses are usable at once for DHCPv6.
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.default.accept_dad=0 net.ipv6.conf.all.accept_dad=0
done
ip -n "$NS_SRV" link add "$IF_SRV" type veth peer name "$IF_CLI" netns "$NS_CLI"
ip -n "$NS_SRV" addr add 192.0.2.1/24 dev "$IF_SRV"
ip -n "$NS_CLI" addr add 192.0.2.2/24 dev "$IF_CLI"
ip -n "$NS_SRV" link set "$IF_SRV" up
ip -n "$NS_CLI" link set "$IF_CLI" up
# The kernel adds the IPv6 link-local addresses a moment after the carrier comes up.
for _ in $(seq 1 40); do
    if ip -n "$NS_CLI" -6 addr show dev "$IF_CLI" scope link | grep -q fe80 \
            && ip -n "$NS_SRV" -6 addr show dev "$IF_SRV" scope link | grep -q fe80; then
        break
    fi
    sleep 0.25
done

# As systemd would run it: the netunlockd user, only CAP_NET_BIND_SERVICE, no new privileges,
# umask 077, the installed binary and config. /proc and /sys are mounted in the private mount
# namespace `ip netns exec` creates, so they vanish with the process.
# shellcheck disable=SC2016 # expanded by the inner sh
SRV_WRAPPER='mount -t proc proc "$1/proc" && mount -t sysfs sysfs "$1/sys" && root="$1" && shift && umask 077 && exec chroot "$root" setpriv --reuid=netunlockd --regid=netunlockd --init-groups --no-new-privs --inh-caps=-all,+net_bind_service --ambient-caps=-all,+net_bind_service --bounding-set=-all,+net_bind_service "$@"'
run_in_srv() { # <log> <command...>: run a command of the installed layout as netunlockd in the server namespace
    local logf="$1"
    shift
    ip netns exec "$NS_SRV" sh -c "$SRV_WRAPPER" sh "$ROOT" "$@" >"$logf" 2>&1
}
# Readiness: /healthz answers 200 on the metrics listener (plain HTTP, read with bash's /dev/tcp so
# nothing else is needed). `netunlockd status` is checked separately, as an operator would run it.
http_get() { # <path> on the metrics listener in the server namespace; prints the raw response
    ip netns exec "$NS_SRV" bash -c 'exec 3<>/dev/tcp/127.0.0.1/9567 && printf "GET %s HTTP/1.0\r\nHost: localhost\r\n\r\n" "$1" >&3 && cat <&3' \
        sh "$1" 2>/dev/null
}
healthz() { http_get /healthz; }
start_daemon() { # <log>
    # A plain background command (not a function), so $! is the daemon itself: ip, sh, chroot and
    # setpriv all exec into it.
    ip netns exec "$NS_SRV" sh -c "$SRV_WRAPPER" sh "$ROOT" /usr/bin/netunlockd serve \
        --config /etc/netunlockd/netunlockd.toml >"$1" 2>&1 &
    DAEMON_PID=$!
    local i
    for i in $(seq 1 120); do
        if ! kill -0 "$DAEMON_PID" 2>/dev/null; then
            bad "netunlockd serve exited during start"
            sed 's/^/    /' "$1"
            DAEMON_PID=""
            return 1
        fi
        if healthz >"$WORK/healthz.txt" && head -n1 "$WORK/healthz.txt" | grep -q ' 200 '; then
            ok "netunlockd serve is up, /healthz 200 after $((i / 4)).$((i % 4 * 25)) s"
            sed -n '/^{/,$p' "$WORK/healthz.txt" | sed 's/^/    /'
            echo
            if ip netns exec "$NS_SRV" chroot "$ROOT" /usr/bin/netunlockd status \
                    --config /etc/netunlockd/netunlockd.toml >"$WORK/status.txt" 2>&1; then
                ok "netunlockd status: healthy"
            else
                bad "netunlockd status"
            fi
            sed 's/^/    /' "$WORK/status.txt"
            return 0
        fi
        sleep 0.25
    done
    bad "netunlockd serve did not become healthy in 30 s"
    sed 's/^/    /' "$1" "$WORK/healthz.txt"
    kill -KILL "$DAEMON_PID" 2>/dev/null || true
    wait "$DAEMON_PID" 2>/dev/null || true
    DAEMON_PID=""
    return 1
}
stop_daemon() { # <log>
    [[ -n "$DAEMON_PID" ]] || return 0
    if ! kill -TERM "$DAEMON_PID" 2>/dev/null; then
        bad "netunlockd serve was still running before SIGTERM"
        sed 's/^/    /' "$1"
        DAEMON_PID=""
        return 0
    fi
    local rc=0
    wait "$DAEMON_PID" || rc=$?
    DAEMON_PID=""
    expect_eq "netunlockd serve exits cleanly on SIGTERM" "$rc" 0
    ((rc == 0)) || sed 's/^/    /' "$1"
}
CER=/var/lib/netunlockd/network-unlock/network-unlock.cer
probe() { # <family> <label>
    if ip netns exec "$NS_CLI" chroot "$ROOT" /usr/bin/netunlockd probe "$1" --cert "$CER" \
            --interface "$IF_CLI" --timeout-ms 5000 >"$WORK/probe.txt" 2>&1; then
        ok "$2: $(head -n1 "$WORK/probe.txt")"
    else
        bad "$2"
        sed 's/^/    /' "$WORK/probe.txt"
    fi
}

if start_daemon "$WORK/serve1.log"; then
    expect_eq "generated unlock .cer" "$(mode_of "$CER" | cut -d' ' -f2-)" "netunlockd netunlockd"
    expect_eq "generated unlock key mode" "$(mode_of /var/lib/netunlockd/network-unlock/network-unlock.key)" "600 netunlockd netunlockd"
    expect_eq "generated KEK mode" "$(mode_of /var/lib/netunlockd/kek.bin)" "600 netunlockd netunlockd"
    check "SQLite escrow database created" test -s "$ROOT/var/lib/netunlockd/escrow.db"
    expect_eq "state dir mode after first start" "$(mode_of /var/lib/netunlockd)" "750 netunlockd netunlockd"
    probe v4 "probe v4 (broadcast over the veth) unlocks"
    probe v6 "probe v6 (ff02::1:2 over the veth) unlocks"
    # A real scrape after real requests: lint it with promtool and look for the metrics the alerts use.
    http_get /metrics | sed '1,/^\r*$/d' >"$WORK/metrics.txt"
    if promtool check metrics <"$WORK/metrics.txt" >"$WORK/promlint.txt" 2>&1; then
        ok "promtool check metrics on a real scrape"
    else
        bad "promtool check metrics on a real scrape"
        sed 's/^/    /' "$WORK/promlint.txt"
    fi
    check "metrics: netunlockd_build_info" grep -q '^netunlockd_build_info{' "$WORK/metrics.txt"
    check "metrics: the probes counted as answered" grep -qE '^netunlockd_requests_total\{.*outcome="answered".*\} [1-9]' "$WORK/metrics.txt"
    check "metrics: certificate expiry gauge" grep -q '^netunlockd_certificate_expiry_seconds{' "$WORK/metrics.txt"
    check "metrics: process_resident_memory_bytes" grep -q '^process_resident_memory_bytes ' "$WORK/metrics.txt"
    stop_daemon "$WORK/serve1.log"
fi
check "start-up summary names the certificate" grep -qi 'thumbprint\|certificate' "$WORK/serve1.log"

# Unsafe state is refused with a clear message: a private key readable by the group.
KEY=/var/lib/netunlockd/network-unlock/network-unlock.key
if [[ -e "$ROOT$KEY" ]]; then
    chmod 0640 "$ROOT$KEY"
    if timeout 20 ip netns exec "$NS_SRV" sh -c "$SRV_WRAPPER" sh "$ROOT" /usr/bin/netunlockd serve \
            --config /etc/netunlockd/netunlockd.toml >"$WORK/refuse.txt" 2>&1; then
        bad "serve refuses a group-readable private key (it started)"
    elif grep -q 'chmod 600' "$WORK/refuse.txt"; then
        ok "serve refuses a group-readable private key: $(grep -m1 'chmod 600' "$WORK/refuse.txt" | cut -c1-150)"
    else
        bad "serve refuses a group-readable private key with a clear message"
        sed 's/^/    /' "$WORK/refuse.txt"
    fi
    chmod 0600 "$ROOT$KEY"
fi

# First admin, as an operator would after installing (daemon stopped or running; here stopped).
TOKEN=""
if run_in_srv "$WORK/bootstrap.txt" /usr/bin/netunlockd operator bootstrap --config /etc/netunlockd/netunlockd.toml; then
    TOKEN="$(sed -n 's/^token: //p' "$WORK/bootstrap.txt")"
fi
check "operator bootstrap printed a token" test -n "$TOKEN"

# ---------------------------------------------------------------------------------------------
stage "deb: upgrade to revision 2 with data kept"
fingerprint() { # what must survive an upgrade
    (cd "$ROOT/var/lib/netunlockd" && sha256sum network-unlock/network-unlock.cer network-unlock/network-unlock.key \
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
stage "deb: remove (state kept), purge (state gone)"
after_upgrade="$(fingerprint)"
if in_root dpkg -r netunlockd >"$WORK/remove.txt" 2>&1 </dev/null; then ok "dpkg -r netunlockd"; else bad "dpkg -r netunlockd"; sed 's/^/    /' "$WORK/remove.txt"; fi
check "binary removed" test ! -e "$ROOT/usr/bin/netunlockd"
check "unit removed" test ! -e "$ROOT/usr/lib/systemd/system/netunlockd.service"
expect_eq "keys, KEK and database kept on remove" "$(fingerprint)" "$after_upgrade"
check "conffile kept on remove" test -f "$ROOT/etc/netunlockd/netunlockd.toml"
check "user kept on remove" sh -c "chroot '$ROOT' getent passwd netunlockd"
if in_root dpkg -P netunlockd >"$WORK/purge.txt" 2>&1 </dev/null; then ok "dpkg -P netunlockd"; else bad "dpkg -P netunlockd"; sed 's/^/    /' "$WORK/purge.txt"; fi
check "state directory gone on purge" test ! -e "$ROOT/var/lib/netunlockd"
check "config directory gone on purge" test ! -e "$ROOT/etc/netunlockd"
check "config statoverride gone on purge" sh -c "! chroot '$ROOT' dpkg-statoverride --list /etc/netunlockd/netunlockd.toml"
check "user kept on purge (Debian policy; documented in install.md)" sh -c "chroot '$ROOT' getent passwd netunlockd"
expect_eq "package state after purge" "$(in_root dpkg-query -W -f='${Status}' netunlockd 2>/dev/null || echo not-installed)" not-installed

# ---------------------------------------------------------------------------------------------
stage "deb under a real systemd: the packaged unit, its sandbox, Type=notify, reload, probe"
# A second cached root with systemd, booted with systemd-nspawn inside the server namespace (so the
# service gets the veth of the probe test). Inside, a oneshot unit installs the .deb (this time the
# postinst takes the systemd-sysusers path), runs `systemctl enable --now netunlockd`, reports the
# service's identity, capabilities and sandbox, waits for the host's probe, reloads, and powers off.
SD_TARBALL="$CACHE/bookworm-minbase+${ROOT_INCLUDE//,/+}+systemd.tar.gz"
SDROOT="$WORK/sdroot"
sd_ready=1
if ! command -v systemd-nspawn >/dev/null; then
    apt-get install -y -qq --no-install-recommends systemd-container >/dev/null 2>&1 || true
fi
if ! command -v systemd-nspawn >/dev/null; then
    sd_ready=0
    log "SKIP: systemd-nspawn is not available (package systemd-container)"
elif [[ ! -s "$SD_TARBALL" ]]; then
    log "no cached systemd root in $SD_TARBALL: adding systemd to the minbase root (about a minute)"
    new_root "$SDROOT"
    cp /etc/resolv.conf "$SDROOT/etc/resolv.conf"  # apt inside the root; removed again below
    if chroot "$SDROOT" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd systemd-sysv dbus && apt-get clean' \
            >"$WORK/sdroot-apt.log" 2>&1; then
        rm -f "$SDROOT/etc/resolv.conf"
        rm -rf "$SDROOT"/var/lib/apt/lists/*
        : >"$SDROOT/etc/machine-id"
        tar -C "$SDROOT" -czf "$SD_TARBALL.tmp" . && mv "$SD_TARBALL.tmp" "$SD_TARBALL"
    else
        sd_ready=0
        bad "could not install systemd into the test root"
        tail -20 "$WORK/sdroot-apt.log" | sed 's/^/    /'
    fi
    rm -rf --one-file-system "$SDROOT"
fi
if ((sd_ready)); then
    new_root "$SDROOT" "$SD_TARBALL"
    cp "$DEB1" "$SDROOT/root/netunlockd.deb"
    cat >"$SDROOT/root/nu-test.sh" <<'INNER'
#!/bin/sh
# Runs inside the booted test container; the host reads /root/nu-test.out.
exec >/root/nu-test.out 2>&1
dpkg -i /root/netunlockd.deb </dev/null
echo "id: $(id netunlockd)"
if systemctl enable --now netunlockd; then echo "start: ok"; else echo "start: failed"; fi
systemctl show netunlockd -p ActiveState -p SubState -p Type -p MainPID -p NRestarts -p WatchdogUSec -p StatusText
pid="$(systemctl show -p MainPID --value netunlockd)"
grep -E '^(Uid|Gid|CapInh|CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' "/proc/$pid/status" | tr -s '\t' ' '
if netunlockd status; then echo "health: ok"; else echo "health: failed"; fi
touch /root/nu-ready
i=0
while [ ! -e /root/probe-done ] && [ $i -lt 60 ]; do sleep 1; i=$((i + 1)); done
if systemctl reload netunlockd; then echo "reload: ok"; else echo "reload: failed"; fi
sleep 2
echo "after-reload: $(systemctl show -p MainPID --value netunlockd) $(systemctl is-active netunlockd)"
systemctl stop netunlockd
echo "stop-result: $(systemctl show -p Result --value netunlockd)"
journalctl -u netunlockd --no-pager -o cat | tail -n 40 | sed 's/^/journal: /'
echo "done"
systemctl poweroff
INNER
    chmod 0755 "$SDROOT/root/nu-test.sh"
    cat >"$SDROOT/etc/systemd/system/nu-test.service" <<'INNER'
[Unit]
Description=netunlockd package test
After=multi-user.target
[Service]
Type=oneshot
ExecStart=/root/nu-test.sh
[Install]
WantedBy=multi-user.target
INNER
    chroot "$SDROOT" systemctl enable nu-test.service >/dev/null 2>&1
    timeout 180 systemd-nspawn -q -D "$SDROOT" -b --register=no --keep-unit --console=read-only \
        --network-namespace-path="/run/netns/$NS_SRV" >"$WORK/nspawn.log" 2>&1 &
    nspawn_pid=$!
    for _ in $(seq 1 240); do
        [[ -e "$SDROOT/root/nu-ready" ]] && break
        kill -0 "$nspawn_pid" 2>/dev/null || break
        sleep 0.5
    done
    if [[ -e "$SDROOT/root/nu-ready" ]] && [[ -s "$SDROOT/var/lib/netunlockd/network-unlock/network-unlock.cer" ]]; then
        # The client side runs on the host, with the container's copy of the binary.
        if ip netns exec "$NS_CLI" "$SDROOT/usr/bin/netunlockd" probe v4 \
                --cert "$SDROOT/var/lib/netunlockd/network-unlock/network-unlock.cer" \
                --interface "$IF_CLI" --timeout-ms 5000 >"$WORK/sd-probe.txt" 2>&1; then
            ok "probe v4 unlocks against the service started by systemd: $(head -n1 "$WORK/sd-probe.txt")"
        else
            bad "probe v4 against the service started by systemd"
            sed 's/^/    /' "$WORK/sd-probe.txt"
        fi
    else
        bad "the service under systemd did not come up (no readiness report)"
    fi
    touch "$SDROOT/root/probe-done"
    wait "$nspawn_pid" || true
    OUT="$SDROOT/root/nu-test.out"
    if [[ -s "$OUT" ]]; then
        sed 's/^/    /' "$OUT"
        sd_uid="$(sed -n 's/^id: uid=\([0-9]*\).*/\1/p' "$OUT")"
        check "systemd: user created by systemd-sysusers" test -n "$sd_uid"
        check "systemd: systemctl enable --now succeeded" grep -qx 'start: ok' "$OUT"
        check "systemd: active (running) after READY=1" grep -qx 'SubState=running' "$OUT"
        check "systemd: Type=notify" grep -qx 'Type=notify' "$OUT"
        check "systemd: watchdog armed" grep -qx 'WatchdogUSec=30s' "$OUT"
        check "systemd: runs as netunlockd" grep -qE "^Uid: $sd_uid $sd_uid $sd_uid $sd_uid\$" "$OUT"
        check "systemd: effective capabilities = CAP_NET_BIND_SERVICE only" grep -qx 'CapEff: 0000000000000400' "$OUT"
        check "systemd: bounding set = CAP_NET_BIND_SERVICE only" grep -qx 'CapBnd: 0000000000000400' "$OUT"
        check "systemd: no new privileges" grep -qx 'NoNewPrivs: 1' "$OUT"
        check "systemd: seccomp filter active" grep -qx 'Seccomp: 2' "$OUT"
        check "systemd: netunlockd status healthy" grep -qx 'health: ok' "$OUT"
        check "systemd: reload (SIGHUP) succeeded" grep -qx 'reload: ok' "$OUT"
        main_pid="$(sed -n 's/^MainPID=//p' "$OUT")"
        check "systemd: reload kept the same process, still active" grep -qx "after-reload: $main_pid active" "$OUT"
        check "systemd: clean stop" grep -qx 'stop-result: success' "$OUT"
    else
        bad "the systemd test container produced no report"
        tail -40 "$WORK/nspawn.log" | sed 's/^/    /'
    fi
fi

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
check "rpm: state kept on erase" test -s "$RROOT/var/lib/netunlockd/kek.bin"
check "rpm: edited config saved as .rpmsave" test -f "$RROOT/etc/netunlockd/netunlockd.toml.rpmsave"

# ---------------------------------------------------------------------------------------------
stage "result"
printf '%d passed, %d failed\n' "$PASS" "$FAIL"
((FAIL == 0))
