-- Directory operators (issue 10): people who sign in with their directory account. Their role is
-- re-read from group membership at every sign-in; the record keys on the directory DN.
ALTER TABLE operators ADD COLUMN directory_dn TEXT;
ALTER TABLE operators ADD COLUMN last_sign_in_at INTEGER;
CREATE UNIQUE INDEX operators_directory_dn ON operators(directory_dn);
