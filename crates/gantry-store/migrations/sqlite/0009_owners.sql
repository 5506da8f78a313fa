-- Owners of runs (a `gantry run` process, a server) with their leases. An owner renews its row
-- while it lives; a run whose owner's lease has passed is orphaned, whichever host looks.
CREATE TABLE owners (
    name TEXT PRIMARY KEY,
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    started_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
