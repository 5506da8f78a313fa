-- A run's own variables (a JSON object of strings), which its steps see: GANTRY_TAG of a tag
-- run, GANTRY_PR and its refs of a pull request's, those given with `gantry trigger --var`.
ALTER TABLE runs ADD COLUMN vars TEXT NOT NULL DEFAULT '{}';
