#!/usr/bin/env python3
"""Writes the seed corpora in fuzz/seeds/<target>/ from the repository's test vectors, the WDS
example, the packaged configuration and docs/configuration.md. Run from anywhere:
    python3 fuzz/make-seeds.py
Seeds are committed; the fuzzing corpora grow in fuzz/corpus/ (not committed)."""
import pathlib
import re
import struct

root = pathlib.Path(__file__).resolve().parent.parent
seeds = root / "fuzz" / "seeds"
data = root / "netunlock" / "tests" / "data"


def write(target, name, blob):
    d = seeds / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(blob)


def hexfile(name):
    return bytes.fromhex((data / name).read_text().strip())


# ---- DHCPv4: the §5.4 vector, relayed, and with a DHCPINFORM type and a lease option.
v4 = hexfile("v4_request.hex")
write("v4_request", "vector54", v4)
relayed = bytearray(v4)
relayed[3] = 1  # hops
relayed[24:28] = bytes([192, 0, 2, 1])  # giaddr
write("v4_request", "vector54-relayed", bytes(relayed))
# Option 53 = INFORM and option 51 (lease time) inserted right after the magic cookie.
write("v4_request", "vector54-inform", v4[:240] + bytes([53, 1, 8, 51, 4, 0, 0, 14, 16]) + v4[240:])
write("v4_request", "reply54-not-a-request", hexfile("v4_reply.hex"))

# ---- DHCPv6: the §5.4 Information-Request, direct, and inside one and two Relay-Forwards.
v6 = hexfile("v6_request.hex")
write("v6_request", "vector54", v6)


def relay_forward(inner, hop, link, peer, interface_id=None):
    msg = bytes([12, hop]) + link + peer
    if interface_id is not None:
        msg += struct.pack("!HH", 18, len(interface_id)) + interface_id
    return msg + struct.pack("!HH", 9, len(inner)) + inner


link = bytes.fromhex("20010db8000000010000000000000001")
peer = bytes.fromhex("fe800000000000000000000000000002")
one = relay_forward(v6, 0, link, peer, b"eth0")
write("v6_request", "vector54-relayed", one)
link2 = bytes.fromhex("20010db8000000020000000000000001")
write("v6_request", "vector54-relayed-twice", relay_forward(one, 1, link2, link, None))
write("v6_request", "reply54-not-a-request", hexfile("v6_reply.hex"))

# ---- WDS ini: Microsoft's example (UTF-8, UTF-8 with BOM, UTF-16LE with BOM), a DISABLED section.
ini_tests = (root / "netunlock" / "tests" / "wds_ini.rs").read_text()
example = re.search(r'const MICROSOFT_EXAMPLE: &str = "(.*?)";', ini_tests, re.S).group(1)
write("wds_ini", "microsoft-example", example.encode())
write("wds_ini", "microsoft-example-bom", b"\xef\xbb\xbf" + example.encode())
write("wds_ini", "microsoft-example-utf16le", b"\xff\xfe" + example.encode("utf-16-le"))
write(
    "wds_ini",
    "disabled",
    b"[SUBNETS]\nlab=10.1.0.0/16\n[0000000000000000000000000000000000000001]\nDISABLED\nlab\n",
)

# ---- Configuration: the packaged file, and one that sets every section (as the e2e tests write).
write("config", "packaged", (root / "packaging" / "netunlockd.toml").read_bytes())
write(
    "config",
    "every-section",
    b"""version = 1
state_dir = "/var/lib/netunlockd"

[log]
level = "info,netunlock=debug"
format = "json"

[metrics]
listen = "127.0.0.1:9567"

[unlock]
interfaces = ["eth0"]
workers = 2
queue_capacity = 1024
max_request_age_ms = 2000
rate_limit_burst = 4
rate_limit_per_second = 0.5
trusted_relays = ["192.0.2.1/32", "2001:db8::1/128"]
relay_share = 8
subnet_policy = "/etc/netunlockd/bde-network-unlock.ini"

[[unlock.certificate]]
cert = "/etc/netunlockd/unlock.pem"
key = "/etc/netunlockd/unlock.key"
enabled = true
allowed_subnets = ["10.0.0.0/8", "2001:db8::/32"]

[[unlock.certificate]]
cert = "/etc/netunlockd/unlock.pfx"
pfx_password_file = "/etc/netunlockd/pfx.pass"
enabled = false

[escrow]
listen = "0.0.0.0:8443"
database_url = "postgres://netunlockd@db/netunlockd"
tls_names = ["escrow.example.com"]
max_body_bytes = 65536
request_timeout_secs = 30
stale_after_days = 30
""",
)
