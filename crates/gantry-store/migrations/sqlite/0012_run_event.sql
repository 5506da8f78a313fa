-- What started a run, as `when:` rules name it (`push`, `manual`): a re-run and a re-queued
-- run keep the event of the run they repeat. Empty for runs recorded before: read from the
-- trigger then.
ALTER TABLE runs ADD COLUMN event TEXT NOT NULL DEFAULT '';
