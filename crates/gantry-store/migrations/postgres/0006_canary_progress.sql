-- Where a running canary is (the step it observes, the share the router serves, since when),
-- kept with its release so that the server taking the deployment over goes on from there: the
-- same server started again, or another one after the driver died.
ALTER TABLE releases ADD COLUMN canary_step BIGINT;
ALTER TABLE releases ADD COLUMN canary_percent BIGINT;
ALTER TABLE releases ADD COLUMN canary_since BIGINT;
