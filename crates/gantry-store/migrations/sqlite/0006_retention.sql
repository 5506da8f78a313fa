-- Retention: artifact rows are kept as history when their object is deleted (`removed_at`), so
-- `gantry why` can say an artifact was removed by retention. Pins keep objects whatever the
-- retention settings: by hand (`gantry artifact pin`) now, by kept releases with the deploy work.
ALTER TABLE artifacts ADD COLUMN removed_at BIGINT;
CREATE TABLE pins (
    id INTEGER PRIMARY KEY,
    digest TEXT NOT NULL,
    reason TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (digest, reason)
);
