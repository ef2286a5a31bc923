# netunlockd %postun ($1 = 0 on erase, 1 on upgrade): %systemd_postun_with_restart.
# State in /var/lib/netunlockd (keys, KEK, database) and the netunlockd user are kept on erase;
# RPM has no purge, so delete /var/lib/netunlockd by hand when the keys are no longer needed.
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
	if [ "$1" -ge 1 ]; then
		systemctl try-restart netunlockd.service >/dev/null 2>&1 || :
	fi
fi
exit 0
