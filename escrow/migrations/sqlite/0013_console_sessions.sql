-- Web console sessions (server-side). The browser holds a random secret in an HttpOnly cookie; only
-- its SHA-256 is stored. Timestamps: INTEGER microseconds since the Unix epoch (UTC).
CREATE TABLE console_sessions (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    token_hash   BLOB    NOT NULL UNIQUE,
    operator_id  INTEGER NOT NULL REFERENCES operators(id),
    created_at   INTEGER NOT NULL,
    last_seen_at INTEGER NOT NULL,
    -- absolute end of the session, whatever the activity
    expires_at   INTEGER NOT NULL,
    client_addr  TEXT
);
CREATE INDEX console_sessions_operator ON console_sessions(operator_id);
CREATE INDEX console_sessions_expires ON console_sessions(expires_at);
