-- PostgreSQL only by nature: the find/disclose rate limit per operator, shared by every appliance
-- on this database (N appliances must not give N times the burst). A SQLite database belongs to
-- one appliance, whose in-memory limiter is enough, so there is no SQLite counterpart.
-- GCRA: `tat` is the theoretical arrival time (microseconds since the Unix epoch).
CREATE TABLE rate_limits (
    key TEXT   PRIMARY KEY,
    tat BIGINT NOT NULL
);
