-- Stable share links (`/s/...`): valid while the artifact exists and the link is not revoked;
-- each visit redirects to a freshly signed short-lived URL (gantry's own, or an S3 presigned
-- URL when `presign` is set).
ALTER TABLE shares ADD COLUMN stable INTEGER NOT NULL DEFAULT 0;
ALTER TABLE shares ADD COLUMN presign INTEGER NOT NULL DEFAULT 0;
