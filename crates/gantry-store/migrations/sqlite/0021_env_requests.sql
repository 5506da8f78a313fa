-- What is asked of an environment's driver through another server (a canary's promote, abort,
-- pause or resume; an alarm): taken by the server that drives the environment, carried out
-- there, answered for the asker, who removes the row once it read the answer.
CREATE TABLE env_requests (
    id INTEGER PRIMARY KEY,
    project TEXT NOT NULL,
    environment TEXT NOT NULL,
    asked TEXT NOT NULL,
    asked_by TEXT NOT NULL,
    asked_at BIGINT NOT NULL,
    taken_at BIGINT,
    answered_at BIGINT,
    answer_ok INTEGER,
    answer TEXT
);
CREATE INDEX env_requests_open ON env_requests (project, environment, taken_at);
