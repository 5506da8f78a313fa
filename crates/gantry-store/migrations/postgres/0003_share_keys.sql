-- The key share links are signed with, when servers share this database (state in
-- PostgreSQL): one row, stored by the first server to start, replaced by a rotation. A server
-- on SQLite keeps its key in its data directory (share.key) and leaves this table empty.
CREATE TABLE share_keys (
    name TEXT PRIMARY KEY,
    key_hex TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
