-- Unlock ↔ escrow (issue 10): the adapters agents report, and Network Unlock outcomes recorded by the
-- daemon (bounded retention: pruned by age). They join on the MAC address (lower-case aa:bb:cc:dd:ee:ff).
CREATE TABLE device_adapters (
    device_id   INTEGER NOT NULL REFERENCES devices(id),
    mac         TEXT    NOT NULL,
    reported_at INTEGER NOT NULL,
    PRIMARY KEY (device_id, mac)
);
CREATE INDEX device_adapters_mac ON device_adapters(mac);

CREATE TABLE unlock_events (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    at         INTEGER NOT NULL,
    family     TEXT    NOT NULL,
    client     TEXT    NOT NULL,
    mac        TEXT,
    address    TEXT    NOT NULL,
    interface  TEXT    NOT NULL,
    relay      TEXT,
    thumbprint TEXT    NOT NULL,
    outcome    TEXT    NOT NULL
);
CREATE INDEX unlock_events_at ON unlock_events(at);
CREATE INDEX unlock_events_mac_at ON unlock_events(mac, at);
