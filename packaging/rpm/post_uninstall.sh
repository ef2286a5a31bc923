# netunlockd %postun ($1 = 0 on erase, 1 on upgrade): %systemd_postun_with_restart.
# On erase the state (Network Unlock key, escrow KEK, database) is moved aside to
# /var/backups/netunlockd/ (0700), as the .deb does on purge: erasing the package must not lose the
# keys silently. The netunlockd user is kept.
if [ "$1" -eq 0 ] && { [ -e /var/lib/netunlockd ] || [ -L /var/lib/netunlockd ]; }; then
	mkdir -p /var/backups/netunlockd
	chmod 0700 /var/backups/netunlockd
	kept="/var/backups/netunlockd/state-$(date -u +%Y%m%dT%H%M%SZ)"
	while [ -e "$kept" ]; do kept="$kept.1"; done
	mv /var/lib/netunlockd "$kept"
	echo "netunlockd: erase kept the Network Unlock key, the escrow KEK and the database in $kept (delete it once they are no longer needed)" >&2
fi
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
	if [ "$1" -ge 1 ]; then
		systemctl try-restart netunlockd.service >/dev/null 2>&1 || :
	fi
fi
exit 0
