-- Share links: each a row, so a link can be revoked; the URL carries the row id, the expiry and
-- an HMAC over both with the artifact's digest (see gantry-api's shares.rs).
CREATE TABLE shares (
    id INTEGER PRIMARY KEY,
    digest TEXT NOT NULL,
    file_name TEXT NOT NULL,
    media_type TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    revoked_at BIGINT,
    created_at BIGINT NOT NULL,
    created_by TEXT NOT NULL
);
