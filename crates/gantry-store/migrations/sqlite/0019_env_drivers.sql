-- Which server drives each environment (restores it, supervises its releases, runs its
-- canaries, bakes and alarms), under a lease it renews. Another server takes it over once the
-- lease has passed, or once the driver hands it over: asked through handover_to by a server
-- that is about to deploy to it (or roll it back), it lets go and removes its row.
CREATE TABLE env_drivers (
    project TEXT NOT NULL,
    environment TEXT NOT NULL,
    owner TEXT NOT NULL,
    expires_at BIGINT NOT NULL,
    handover_to TEXT,
    PRIMARY KEY (project, environment)
);
