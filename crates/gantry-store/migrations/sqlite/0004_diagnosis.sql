-- The server diagnoses a run when it fails and keeps the result (JSON) with it, so the API and
-- notifications carry the same answer `gantry why` gives.
ALTER TABLE runs ADD COLUMN diagnosis TEXT;
