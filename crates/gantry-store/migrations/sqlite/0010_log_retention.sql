-- `[retention] logs`: when a finished run's log lines were removed (the run itself stays).
ALTER TABLE runs ADD COLUMN logs_removed_at BIGINT;
