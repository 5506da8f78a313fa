-- The server: runs started by triggers carry a key, unique, so that one project, branch and
-- commit never starts two runs however often a webhook is delivered or a poll sees it.
ALTER TABLE runs ADD COLUMN trigger_key TEXT;
CREATE UNIQUE INDEX runs_trigger_key ON runs(trigger_key);
CREATE INDEX runs_queue ON runs(status, id);

-- API tokens, stored hashed (sha256 of the token); the token itself is shown once.
CREATE TABLE tokens (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    role TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
