#!/usr/bin/env bash
# Builds the release binary once, generates man pages and completions from it, and packages it as
# a .deb (cargo-deb) and an .rpm (rpmbuild, packaging/rpm/netunlockd.spec) into dist/, with SHA256SUMS.
#
#   scripts/build-packages.sh                      -> dist/netunlockd_<ver>-1_amd64.deb, .rpm, SHA256SUMS
#   DEB_REVISION=2 scripts/build-packages.sh       -> same version, Debian revision 2 (upgrade tests)
#   DIST_DIR=/tmp/x scripts/build-packages.sh      -> another output folder
#   PROFILE=dev scripts/build-packages.sh          -> package the debug build (quick local iteration)
#   CARGO_TARGET_DIR=/tmp/t scripts/build-packages.sh  -> build in (and package from) another target dir
#
# cargo-deb is installed with `cargo install --locked` at a pinned version when missing (about 3
# minutes on 2 cores; CI machines keep ~/.cargo/bin between runs); rpmbuild comes from the `rpm`
# package (apt-get install rpm).
set -euo pipefail
cd "$(dirname "$0")/.."

CARGO_DEB_VERSION=3.8.0
PROFILE="${PROFILE:-release}"
TARGET_DIR="${CARGO_TARGET_DIR:-target}"
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
command -v rpmbuild >/dev/null || die "rpmbuild is missing: apt-get install rpm (or dnf install rpm-build)"

case "$PROFILE" in
    release) bin="$TARGET_DIR/release/netunlockd" ;;
    dev) bin="$TARGET_DIR/debug/netunlockd" ;;
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

[[ -f agent/netunlockd-agent.ps1 ]] || die "agent/netunlockd-agent.ps1 is missing (it ships in /usr/share/netunlockd/agent/)"

mkdir -p "$DIST_DIR"
rm -f "$DIST_DIR"/netunlockd_*.deb "$DIST_DIR"/netunlockd-*.rpm "$DIST_DIR"/SHA256SUMS

# SOURCE_DATE_EPOCH from the last commit keeps file times in both packages reproducible.
SOURCE_DATE_EPOCH="$(git log -1 --format=%ct 2>/dev/null || date +%s)"
export SOURCE_DATE_EPOCH

# cargo-deb finds the assets under the target dir cargo reports (CARGO_TARGET_DIR included).
cargo deb -p netunlockd --no-build --no-strip --profile "$PROFILE" --deb-revision "$DEB_REVISION" \
    --output "$DIST_DIR/" >&2

# The spec with the scriptlets (the files under packaging/rpm/) put in before %changelog, which
# must come last; `%` in them is doubled so rpmbuild does not take it for a macro.
RPM_TOP="$(mktemp -d)"
trap 'rm -rf "$RPM_TOP"' EXIT
VERSION="$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)"
{
    sed '/^%changelog/,$d' packaging/rpm/netunlockd.spec
    for part in pre:pre_install post:post_install preun:pre_uninstall postun:post_uninstall; do
        printf '%%%s\n' "${part%%:*}"
        sed 's/%/%%/g' "packaging/rpm/${part#*:}.sh"
        printf '\n'
    done
    sed -n '/^%changelog/,$p' packaging/rpm/netunlockd.spec
} >"$RPM_TOP/netunlockd.spec"
rpmbuild -bb --quiet \
    --define "_topdir $RPM_TOP" \
    --define "version $VERSION" \
    --define "release $DEB_REVISION" \
    --define "srcdir $PWD" \
    --define "assets $(cd "$ASSETS" && pwd)" \
    --define "_source_date_epoch_from_changelog 0" \
    --define "use_source_date_epoch_as_buildtime 1" \
    --define "clamp_mtime_to_source_date_epoch 1" \
    "$RPM_TOP/netunlockd.spec" >&2
cp "$RPM_TOP"/RPMS/*/netunlockd-*.rpm "$DIST_DIR/"

(cd "$DIST_DIR" && sha256sum netunlockd_*.deb netunlockd-*.rpm > SHA256SUMS)
log "packages in $DIST_DIR:"
cat "$DIST_DIR/SHA256SUMS" >&2
