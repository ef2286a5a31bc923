# shellcheck shell=bash
# The .deb under a real systemd (systemd-nspawn boot in the server namespace).
# Sourced by scripts/package-test.sh, whose helpers (ok, bad, check, expect_eq, log) and variables
# (WORK, CACHE, DEB1, NS_SRV, NS_CLI, IF_CLI, new_root) it uses.

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

