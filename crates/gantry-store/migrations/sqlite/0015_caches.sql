-- Job caches (`cache:`): one per project and key, its object in the artifact store. Saving a
-- key a cache has already is refused by the key, so two jobs saving it at once keep one.
CREATE TABLE caches (
    id INTEGER PRIMARY KEY,
    project TEXT NOT NULL,
    key TEXT NOT NULL,
    digest TEXT NOT NULL,
    size BIGINT NOT NULL,
    media_type TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    last_used_at BIGINT NOT NULL,
    UNIQUE (project, key)
);
CREATE INDEX caches_digest ON caches (digest);
