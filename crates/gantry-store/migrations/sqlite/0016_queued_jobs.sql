-- Job attempts handed to runners (`gantry runner`): queued by the server driving the run,
-- claimed by one runner under a lease it renews (its hash kept, never the lease itself),
-- finished by it, or lost when the lease ran out. One row per job attempt.
CREATE TABLE queued_jobs (
    id INTEGER PRIMARY KEY,
    run_id BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    labels TEXT NOT NULL,
    payload TEXT NOT NULL,
    state TEXT NOT NULL,
    runner TEXT,
    lease_hash TEXT,
    lease_until BIGINT,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    queued_at BIGINT NOT NULL,
    claimed_at BIGINT,
    finished_at BIGINT,
    outcome TEXT,
    exit_code INTEGER,
    error TEXT,
    UNIQUE (job_id, attempt)
);
CREATE INDEX queued_jobs_waiting ON queued_jobs (state, id);
