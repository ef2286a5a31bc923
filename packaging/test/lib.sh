# shellcheck shell=bash
# Counted assertions and logging for the package test (sourced by scripts/package-test.sh, which
# sets PASS=0 FAIL=0 and prints "N passed, N failed" at the end).

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
