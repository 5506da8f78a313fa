-- Releases of environments, what happened to them, and one deployment lock per environment.
-- The history only grows: a rollback adds a release (kind 'rollback') that serves an earlier
-- deploy release's directory (source_number).
CREATE TABLE releases (
    id INTEGER PRIMARY KEY,
    project TEXT NOT NULL,
    environment TEXT NOT NULL,
    number BIGINT NOT NULL,
    kind TEXT NOT NULL,
    source_number BIGINT NOT NULL,
    artifact TEXT NOT NULL,
    digest TEXT NOT NULL,
    run_id BIGINT,
    commit_sha TEXT,
    created_by TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT,
    live_at BIGINT,
    ended_at BIGINT,
    retired_at BIGINT,
    UNIQUE (project, environment, number)
);
-- At most one live release per environment, whatever happens between statements.
CREATE UNIQUE INDEX releases_one_live ON releases(project, environment) WHERE state = 'live';

CREATE TABLE release_events (
    id INTEGER PRIMARY KEY,
    release_id BIGINT NOT NULL REFERENCES releases(id) ON DELETE CASCADE,
    at BIGINT NOT NULL,
    kind TEXT NOT NULL,
    message TEXT NOT NULL
);
CREATE INDEX release_events_by_release ON release_events(release_id, id);

CREATE TABLE environment_locks (
    project TEXT NOT NULL,
    environment TEXT NOT NULL,
    owner TEXT NOT NULL,
    purpose TEXT NOT NULL,
    acquired_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    PRIMARY KEY (project, environment)
);
