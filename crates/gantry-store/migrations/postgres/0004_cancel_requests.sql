-- A cancel asked for through a server that does not run the run: the server that runs it
-- (its owner) looks for these and cancels the run itself.
ALTER TABLE runs ADD COLUMN cancel_requested_at BIGINT;
