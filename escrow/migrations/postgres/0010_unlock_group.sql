-- Network Unlock group membership (issue 11): one heartbeat row per appliance of a group.
-- PostgreSQL only by nature: a group is several appliances sharing one database, which SQLite cannot
-- be, so there is no SQLite counterpart (configuration validation refuses a group on SQLite).
-- Timestamps: BIGINT microseconds since the Unix epoch, taken from the database's clock so the
-- appliances' own clocks never matter.

CREATE TABLE unlock_group_members (
    group_name TEXT   NOT NULL,
    member_id  TEXT   NOT NULL,
    -- Where the member can be reached, for operators (host name or address); informational.
    address    TEXT   NOT NULL DEFAULT '',
    joined_at  BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL,
    PRIMARY KEY (group_name, member_id)
);
