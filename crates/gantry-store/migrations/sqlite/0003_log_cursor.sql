-- Reading a run's log from a cursor: the first line of each step is found through this index,
-- then lines are read in id order from there (see SqliteStore::logs).
CREATE INDEX log_lines_by_step ON log_lines(step_id, id);
