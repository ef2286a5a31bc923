-- netunlockd escrow schema (SQLite). Timestamps: INTEGER microseconds since the Unix epoch (UTC).
-- Booleans: INTEGER 0/1. Secrets are sealed blobs (AES-256-GCM under the data key; see docs/escrow-data-model.md).

CREATE TABLE keyring (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    kek_id       TEXT    NOT NULL,
    dek_id       TEXT    NOT NULL,
    wrapped_dek  BLOB    NOT NULL,
    created_at   INTEGER NOT NULL,
    rewrapped_at INTEGER
);

CREATE TABLE operators (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    name        TEXT    NOT NULL UNIQUE,
    role        TEXT    NOT NULL CHECK (role IN ('admin', 'helpdesk', 'auditor')),
    disabled    INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    disabled_at INTEGER
);

CREATE TABLE api_tokens (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    operator_id  INTEGER NOT NULL REFERENCES operators(id),
    token_hash   BLOB    NOT NULL UNIQUE,
    created_at   INTEGER NOT NULL,
    expires_at   INTEGER,
    revoked_at   INTEGER,
    last_used_at INTEGER
);

CREATE TABLE enrollment_tokens (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash  BLOB    NOT NULL UNIQUE,
    note        TEXT,
    max_uses    INTEGER NOT NULL CHECK (max_uses > 0),
    uses        INTEGER NOT NULL DEFAULT 0,
    created_at  INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL,
    revoked_at  INTEGER,
    created_by  TEXT    NOT NULL
);

CREATE TABLE devices (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    computer_name    TEXT    NOT NULL,
    domain           TEXT,
    -- lower(computer_name) || '\' || lower(coalesce(domain, '')): one device record per machine identity
    name_key         TEXT    NOT NULL UNIQUE,
    serial           TEXT,
    first_seen       INTEGER NOT NULL,
    last_check_in    INTEGER,
    cert_sha256      TEXT    NOT NULL,
    revoked          INTEGER NOT NULL DEFAULT 0,
    revoked_at       INTEGER,
    reenroll_allowed INTEGER NOT NULL DEFAULT 0,
    enrolled_token   INTEGER REFERENCES enrollment_tokens(id)
);
CREATE INDEX devices_cert ON devices(cert_sha256);
CREATE INDEX devices_lower_name ON devices(lower(computer_name));

CREATE TABLE volumes (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id   INTEGER NOT NULL REFERENCES devices(id),
    volume_guid TEXT    NOT NULL,
    mount_point TEXT,
    volume_type TEXT    NOT NULL CHECK (volume_type IN ('os', 'fixed', 'removable')),
    first_seen  INTEGER NOT NULL,
    UNIQUE (device_id, volume_guid)
);

CREATE TABLE protectors (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id             INTEGER NOT NULL REFERENCES devices(id),
    volume_id             INTEGER NOT NULL REFERENCES volumes(id),
    protector_id          TEXT    NOT NULL,  -- upper-case hyphenated GUID, no braces
    protector_prefix      TEXT    NOT NULL,  -- first 8 hex digits, upper case (help-desk lookup)
    password_sealed       BLOB    NOT NULL,
    password_mac          BLOB    NOT NULL,
    key_package_sealed    BLOB,
    escrowed_at           INTEGER NOT NULL,
    superseded_at         INTEGER,
    disclosed_at          INTEGER,
    rotation_state        TEXT    NOT NULL DEFAULT 'none'
                          CHECK (rotation_state IN ('none', 'requested', 'new_escrowed', 'done')),
    rotation_requested_at INTEGER,
    rotation_done_at      INTEGER,
    replaced_by           TEXT,
    UNIQUE (volume_id, protector_id)
);
CREATE INDEX protectors_prefix ON protectors(protector_prefix);
CREATE INDEX protectors_pid ON protectors(protector_id);
CREATE INDEX protectors_device ON protectors(device_id);

CREATE TABLE tpm_owner_auth (
    device_id  INTEGER PRIMARY KEY REFERENCES devices(id),
    sealed     BLOB    NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE mismatches (
    id                  INTEGER PRIMARY KEY AUTOINCREMENT,
    device_id           INTEGER NOT NULL REFERENCES devices(id),
    volume_guid         TEXT    NOT NULL,
    protector_id        TEXT    NOT NULL,
    detected_at         INTEGER NOT NULL,
    stored_escrowed_at  INTEGER NOT NULL,
    audit_seq           INTEGER NOT NULL
);

CREATE TABLE audit_log (
    seq          INTEGER PRIMARY KEY,
    at           INTEGER NOT NULL,
    actor_kind   TEXT    NOT NULL,
    actor_id     INTEGER,
    actor_name   TEXT    NOT NULL,
    action       TEXT    NOT NULL,
    device_id    INTEGER,
    device_name  TEXT,
    protector_id TEXT,
    reason       TEXT,
    outcome      TEXT    NOT NULL,
    client_addr  TEXT,
    detail       TEXT    NOT NULL,
    prev_hash    BLOB    NOT NULL,
    hash         BLOB    NOT NULL
);
CREATE INDEX audit_at ON audit_log(at);

-- The chain head: appends lock this row (Postgres: SELECT … FOR UPDATE) so the chain cannot fork, and
-- verification compares it with the last record so deleting the newest records is detected.
CREATE TABLE audit_head (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    seq  INTEGER NOT NULL,
    hash BLOB    NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, zeroblob(32));
