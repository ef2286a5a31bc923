# netunlockd %pre: create the system user before the files (the config is group netunlockd).
# Same as %sysusers_create_package: feed the packaged sysusers line to systemd-sysusers, with a
# useradd fallback where systemd is not installed (image builds, containers).
if command -v systemd-sysusers >/dev/null 2>&1; then
	echo 'u netunlockd - "netunlockd daemon" /var/lib/netunlockd' | \
		systemd-sysusers --replace=/usr/lib/sysusers.d/netunlockd.conf - || :
fi
getent group netunlockd >/dev/null || groupadd -r netunlockd
getent passwd netunlockd >/dev/null || \
	useradd -r -g netunlockd -d /var/lib/netunlockd -M -s /sbin/nologin -c "netunlockd daemon" netunlockd
exit 0
