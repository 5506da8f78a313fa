//! Integration tests of the `gantry` binary, driven the way users drive it: real git
//! repositories in temp dirs, real processes, the real SQLite file.
//!
//! Modules:
//! - `support`: repository fixtures, running the binary, process checks, client load (`Load`).
//! - `canary`: canaries through the real router: steps, analysis (5xx, p99, no traffic), named
//!   users, the forcing header, stickiness, the share, promote/abort, alarms.
//! - `check`: `gantry check` and `gantry schema`.
//! - `dashboard`: the web UI in Chromium (chromedriver): login, live logs, diagnosis links,
//!   share links, rollback, canary, viewer refusals, axe-core; `browser` drives the browser.
//! - `pipeline`: stages, parallel jobs, failures, allow_failure, retries, timeouts, environment.
//! - `s3`: artifacts in an S3 bucket (moto_server): stored once, fetched by later stages, shared,
//!   presigned, an upload cut off mid-way leaves nothing, gc deletes from the bucket.
//! - `secrets`: masking, checked against everything gantry persisted.
//! - `artifacts`: content-addressed storage, dedupe, escaping paths.
//! - `crash`: kill -9 and Ctrl-C in the middle of a run.
//! - `demo`: `gantry demo`: the README's tour command by command, Ctrl-C at five moments (nothing
//!   left running), `--exit`.
//! - `dataplane`: serving that does not depend on the control plane: a second server on a held
//!   data directory is refused under load, touching nothing.
//! - `deploy`: environments with the example service: deploy, rollback, health, crashes, locks,
//!   outdated deploys, kill -9, zero failed requests under load, command targets, retention.
//! - `docker`: the `docker` target against podman's Docker API: images saved into the artifact
//!   store, containers behind the router, rollback, an image restored from the store, keep,
//!   adoption after a restart, bad images and a wrong engine address.
//! - `lambda`: the `lambda` target against moto_server: versions, the alias, rollback without an
//!   upload, retention of versions, an alarm in the bake, the upload limit, AccessDenied.
//! - `postgres`: state in PostgreSQL: `gantry migrate-state`, the refusals that keep history, two
//!   servers on one database sharing the queue (one run per webhook, each run run once).
//! - `rollback`: rollbacks to kept releases, and refusals of releases not as verified.
//! - `server`: `gantry serve`: polling, webhooks, API, tokens, SSE, shutdown, kill -9.
//! - `server_support`: a real server on 127.0.0.1 and a plain HTTP client.
//! - `mistakes`: operator mistakes: bad config, port in use, unset secret variables, auth scheme.
//! - `shares`: share links with plain curl (Range, ETag, stable links, refusals).
//! - `why`: the failure corpus (real tools and quoted formats) and what-changed analysis.
//! - `tls`: HTTPS with a CA made by openssl: the CLI trusts the server by its CA only; bad key
//!   files stop the server before it starts.
//! - `tidy`: module docs and dependency direction of the workspace.

#![allow(clippy::disallowed_methods)] // Tests start the binary and helper processes.

mod approvals;
mod artifacts;
mod browser;
mod caches;
mod canary;
mod check;
mod crash;
mod dashboard;
mod dataplane;
mod demo;
mod deploy;
mod docker;
mod forges;
mod job_containers;
mod lambda;
mod mistakes;
mod pipeline;
mod postgres;
mod recorder;
mod rollback;
mod runners;
mod s3;
mod schedules;
mod secrets;
mod server;
mod server_support;
mod shares;
mod statuses;
mod support;
mod takeover;
mod tidy;
mod tls;
mod why;
mod workflows;
