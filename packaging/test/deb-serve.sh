# shellcheck shell=bash
# The installed daemon in a network namespace, unlocked by `netunlockd probe` from another.
# Sourced by scripts/package-test.sh, whose helpers (ok, bad, check, expect_eq, log) and variables
# (ROOT, NS_SRV, NS_CLI, IF_SRV, IF_CLI; sets DAEMON_PID, TOKEN, start_daemon, stop_daemon, probe) it uses.

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

