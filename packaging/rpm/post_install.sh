# netunlockd %post ($1 = 1 on install, 2 on upgrade).
if command -v systemd-tmpfiles >/dev/null 2>&1; then
	systemd-tmpfiles --create netunlockd.conf >/dev/null 2>&1 || :
fi
if [ ! -d /var/lib/netunlockd ]; then
	mkdir -p /var/lib/netunlockd
fi
chown netunlockd:netunlockd /var/lib/netunlockd
chmod 0750 /var/lib/netunlockd
if [ -d /run/systemd/system ]; then
	systemctl daemon-reload >/dev/null 2>&1 || :
fi
if [ "$1" -eq 1 ]; then
	# %systemd_post: apply the distribution preset (disabled unless a preset enables it).
	if command -v systemctl >/dev/null 2>&1; then
		systemctl --no-reload preset netunlockd.service >/dev/null 2>&1 || :
	fi
	cat <<'MSG'
netunlockd is installed but not started. Next steps:
  1. Review /etc/netunlockd/netunlockd.toml, then: netunlockd config check
  2. systemctl enable --now netunlockd
  3. Import /var/lib/netunlockd/network-unlock/network-unlock.cer into the Group Policy
     "BitLocker Drive Encryption Network Unlock Certificate".
  4. First escrow administrator token: runuser -u netunlockd -- netunlockd operator bootstrap
Documentation: /usr/share/doc/netunlockd/install.md and man netunlockd.
MSG
fi
exit 0
