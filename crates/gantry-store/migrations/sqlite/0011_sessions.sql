-- The dashboard's sessions: by the sha256 of their cookie, each with its CSRF token; the role
-- comes from the token (by its hash) every time a session is used.
CREATE TABLE sessions (
    id_hash TEXT PRIMARY KEY,
    token_hash TEXT NOT NULL,
    csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX sessions_by_expiry ON sessions(expires_at);
