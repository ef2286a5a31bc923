-- A protector ID escrowed by a device while another device already holds it (cloned VM, rogue
-- device): both rows are kept, the help desk chooses by device; each occurrence is recorded here,
-- audited (action escrow_conflict), counted in a gauge and listed in the fleet report.
CREATE TABLE protector_conflicts (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    protector_id    TEXT    NOT NULL,  -- upper-case hyphenated GUID, no braces
    device_id       INTEGER NOT NULL REFERENCES devices(id),
    other_device_id INTEGER NOT NULL REFERENCES devices(id),
    detected_at     INTEGER NOT NULL,
    audit_seq       INTEGER NOT NULL
);
CREATE INDEX protector_conflicts_pid ON protector_conflicts(protector_id);
