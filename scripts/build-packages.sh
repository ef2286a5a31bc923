#!/usr/bin/env bash
# Builds the release binary once, generates man pages and completions from it, and packages it as
# a .deb (cargo-deb) and an .rpm (cargo-generate-rpm) into dist/, with SHA256SUMS.
#
#   scripts/build-packages.sh                      -> dist/netunlockd_<ver>-1_amd64.deb, .rpm, SHA256SUMS
#   DEB_REVISION=2 scripts/build-packages.sh       -> same version, Debian revision 2 (upgrade tests)
#   DIST_DIR=/tmp/x scripts/build-packages.sh      -> another output folder
#   PROFILE=dev scripts/build-packages.sh          -> package the debug build (quick local iteration)
#
# cargo-deb and cargo-generate-rpm are installed with `cargo install --locked` at pinned versions
# when missing (about 3 minutes each on 2 cores; CI machines keep ~/.cargo/bin between runs).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
CARGO_GENERATE_RPM_VERSION=0.21.1
PROFILE="${PROFILE:-release}"
DIST_DIR="${DIST_DIR:-dist}"
DEB_REVISION="${DEB_REVISION:-1}"

log() { printf 'build-packages: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

install_tool() { # <cargo subcommand> <crate> <version>
    if cargo "$1" --version 2>/dev/null | grep -qF "$3"; then
        return
    fi
    log "installing $2 $3 (cargo install --locked; takes a few minutes)"
    cargo install --locked --version "=$3" "$2"
}
install_tool deb cargo-deb "$CARGO_DEB_VERSION"
install_tool generate-rpm cargo-generate-rpm "$CARGO_GENERATE_RPM_VERSION"

case "$PROFILE" in
    release) bin=target/release/netunlockd ;;
    dev) bin=target/debug/netunlockd ;;
    *) die "PROFILE must be release or dev" ;;
esac

# One build. After the CI test stage (`cargo build --release --workspace --all-targets`) the binary is
# newer than every source file, and a `-p netunlockd` build could still recompile dependencies whose
# features differ from the workspace build, so skip cargo entirely then.
if [[ -x "$bin" ]] && [[ -z "$(find Cargo.lock Cargo.toml daemon netunlock escrow certs \
        -newer "$bin" -type f \( -name '*.rs' -o -name '*.toml' -o -name '*.lock' -o -name '*.sql' \) \
        -print -quit)" ]]; then
    log "$bin is newer than the sources; not rebuilding"
else
    cargo build --profile "$PROFILE" --locked -p netunlockd
fi
[[ -x "$bin" ]] || die "$bin was not built"
# Beside the binary, so both tools' `target/release/` rewriting finds them for any profile.
ASSETS="$(dirname "$bin")/netunlockd-assets"

# Man pages and completions come from the CLI definition of this very binary.
rm -rf "$ASSETS"
"$bin" generate-assets --out-dir "$ASSETS" >/dev/null \
    || die "'$bin generate-assets' failed: the daemon must write man/*.8 and completions/ there"
for f in man/netunlockd.8 completions/netunlockd.bash completions/_netunlockd completions/netunlockd.fish; do
    [[ -s "$ASSETS/$f" ]] || die "generate-assets did not write $f"
done
# Compressed once, reproducibly (-n: no name or timestamp), for both package formats.
gzip -9n "$ASSETS"/man/*.8
# One stripped copy of the binary for both packages (as dh_strip does; cargo-generate-rpm does not
# strip, and the release profile keeps line tables for the test suite's backtraces).
mkdir -p "$ASSETS/bin"
strip --strip-unneeded --remove-section=.comment --remove-section=.note -o "$ASSETS/bin/netunlockd" "$bin"

[[ -f agent/netunlockd-agent.ps1 ]] || die "agent/netunlockd-agent.ps1 is missing (it ships in /usr/share/doc/netunlockd/agent/)"

mkdir -p "$DIST_DIR"
rm -f "$DIST_DIR"/netunlockd_*.deb "$DIST_DIR"/netunlockd-*.rpm "$DIST_DIR"/SHA256SUMS

# SOURCE_DATE_EPOCH from the last commit keeps file times in both packages reproducible.
SOURCE_DATE_EPOCH="$(git log -1 --format=%ct 2>/dev/null || date +%s)"
export SOURCE_DATE_EPOCH

cargo deb -p netunlockd --no-build --no-strip --profile "$PROFILE" --deb-revision "$DEB_REVISION" \
    --output "$DIST_DIR/" >&2
cargo generate-rpm -p daemon --profile "$PROFILE" \
    -s "release = \"$DEB_REVISION\"" --output "$DIST_DIR/" >&2

(cd "$DIST_DIR" && sha256sum netunlockd_*.deb netunlockd-*.rpm > SHA256SUMS)
log "packages in $DIST_DIR:"
cat "$DIST_DIR/SHA256SUMS" >&2
