-- The jobs a job waits for (`needs: [job]`), a JSON list of names, for the run's graph.
ALTER TABLE jobs ADD COLUMN waits_for TEXT NOT NULL DEFAULT '[]';
