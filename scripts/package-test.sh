#!/usr/bin/env bash
# shellcheck disable=SC2034 # variables set here are used by the stages sourced from packaging/test/
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

# shellcheck source=packaging/test/lib.sh
. packaging/test/lib.sh
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

# Each stage is one file under packaging/test/, run in this shell (they share the variables above).
for part in static deb-install deb-serve deb-lifecycle systemd-boot rpm-install; do
    # shellcheck source=/dev/null
    . "packaging/test/$part.sh"
done

# ---------------------------------------------------------------------------------------------
stage "result"
printf '%d passed, %d failed\n' "$PASS" "$FAIL"
((FAIL == 0))
