-- Runs and their parts. Portable SQL: the PostgreSQL migrations mirror this file with BIGSERIAL
-- ids. Timestamps are Unix milliseconds. Uniqueness rules live here, as constraints.
CREATE TABLE projects (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    repo TEXT NOT NULL
);

CREATE TABLE runs (
    id INTEGER PRIMARY KEY,
    project_id BIGINT NOT NULL REFERENCES projects(id),
    commit_sha TEXT NOT NULL,
    branch TEXT,
    pipeline_file TEXT NOT NULL,
    trigger_kind TEXT NOT NULL,
    status TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    error TEXT,
    -- Who is running it: a lock that its process holds while alive (see gantry-runner's owner.rs).
    owner TEXT
);
CREATE INDEX runs_by_project ON runs(project_id, id);
CREATE INDEX runs_by_status ON runs(status);

CREATE TABLE stages (
    id INTEGER PRIMARY KEY,
    run_id BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    started_at BIGINT,
    finished_at BIGINT,
    note TEXT,
    UNIQUE (run_id, position),
    UNIQUE (run_id, name)
);

CREATE TABLE jobs (
    id INTEGER PRIMARY KEY,
    run_id BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    stage_id BIGINT NOT NULL REFERENCES stages(id) ON DELETE CASCADE,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    attempt INTEGER NOT NULL DEFAULT 0,
    allow_failure BOOLEAN NOT NULL,
    exit_code INTEGER,
    started_at BIGINT,
    finished_at BIGINT,
    error TEXT,
    UNIQUE (run_id, name),
    UNIQUE (stage_id, position)
);

CREATE TABLE steps (
    id INTEGER PRIMARY KEY,
    job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    status TEXT NOT NULL,
    exit_code INTEGER,
    started_at BIGINT,
    finished_at BIGINT,
    UNIQUE (job_id, attempt, position)
);

CREATE TABLE log_lines (
    id INTEGER PRIMARY KEY,
    step_id BIGINT NOT NULL REFERENCES steps(id) ON DELETE CASCADE,
    line INTEGER NOT NULL,
    at BIGINT NOT NULL,
    stream TEXT NOT NULL,
    text TEXT NOT NULL,
    UNIQUE (step_id, line)
);

CREATE TABLE artifacts (
    id INTEGER PRIMARY KEY,
    run_id BIGINT NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    job_id BIGINT NOT NULL REFERENCES jobs(id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    digest TEXT NOT NULL,
    size BIGINT NOT NULL,
    media_type TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (run_id, name)
);
CREATE INDEX artifacts_by_digest ON artifacts(digest);
