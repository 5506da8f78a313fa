//! The JSON Schema of the pipeline file, built from the checker's key tables so that the two
//! cannot disagree on which keys exist (a test checks every table key has a schema property).

use crate::check::{
    ANALYSIS_KEYS, ARTIFACT_KEYS, CANARY_KEYS, CANARY_STEP_KEYS, DEPLOY_KEYS, ENVIRONMENT_KEYS,
    HEALTH_KEYS, IMAGE_BUILD_KEYS, IMAGE_PUSH_KEYS, JOB_KEYS, MAX_RETRIES, ROUTER_KEYS, STAGE_KEYS,
    STEP_KEYS, STRATEGY_KEYS, TOP_KEYS, USERS_KEYS, WHEN_KEYS,
};
use gantry_model::TriggerEvent;
use serde_json::{Value, json};

pub(crate) fn object(keys: &[&str], props: Value, required: &[&str]) -> Value {
    let map = props.as_object().expect("props is an object");
    for k in keys {
        assert!(map.contains_key(*k), "schema lacks property `{k}`");
    }
    json!({ "type": "object", "additionalProperties": false, "properties": props, "required": required })
}

/// The schema, as a JSON value (draft 2020-12).
pub fn pipeline_schema() -> Value {
    let duration = json!({
        "type": "string",
        "pattern": "^([0-9]+(ms|s|m|h|d))+$",
        "description": "A duration such as 90s, 10m or 1h30m"
    });
    let name = json!({ "type": "string", "minLength": 1, "pattern": "^[^/]+$" });
    let env = json!({
        "type": "object",
        "description": "Variables for the steps",
        "propertyNames": { "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" },
        "additionalProperties": { "type": ["string", "number", "boolean", "null"] }
    });
    let names = json!({ "type": "array", "items": { "type": "string", "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" } });
    let step = json!({
        "oneOf": [
            { "type": "string", "description": "A shell command" },
            object(STEP_KEYS, json!({
                "name": name,
                "run": { "type": "string", "description": "Shell text run with sh -c" },
                "env": env,
                "timeout": duration,
            }), &["run"])
        ]
    });
    let push = json!({
        "description": "A registry repository the image is also pushed to, tagged `run-N` and with the commit",
        "oneOf": [
            { "type": "string" },
            object(IMAGE_PUSH_KEYS, json!({
                "to": { "type": "string", "description": "The repository, `host[:port]/path`, no tag" },
                "username": { "type": "string" },
                "password_secret": { "type": "string", "description": "The name of the secret holding the registry password" }
            }), &["to"])
        ]
    });
    let artifact = object(
        ARTIFACT_KEYS,
        json!({
            "name": name,
            "path": {
                "description": "A file, directory or glob relative to the workspace (or a list of them)",
                "oneOf": [{ "type": "string" }, { "type": "array", "items": { "type": "string" } }]
            },
            "image": {
                "type": "string",
                "description": "An image the job's steps built (`app:dev`): saved from the Docker engine into the artifact store"
            },
            "push": push.clone()
        }),
        &["name"],
    );
    let mut artifact = artifact;
    artifact["oneOf"] = json!([{ "required": ["path"] }, { "required": ["image"] }]);
    let one_or_many = |item: Value| json!({ "oneOf": [item, { "type": "array", "minItems": 1, "uniqueItems": true, "items": item }] });
    let events: Vec<&str> = TriggerEvent::ALL.iter().map(|e| e.as_str()).collect();
    let when = object(
        WHEN_KEYS,
        json!({
            "branch": one_or_many(json!({ "type": "string", "minLength": 1, "pattern": "^[^\\s]+$", "description": "A branch name; `*` matches any characters, `/` included" })),
            "tag": one_or_many(json!({ "type": "string", "minLength": 1, "pattern": "^[^\\s]+$", "description": "A tag name (the run must be of a tag); `*` matches any characters" })),
            "event": one_or_many(json!({ "enum": events, "description": "What started the run: push, tag, pull_request, schedule or manual. A deploy stage runs for pull requests only when this names pull_request" })),
        }),
        &[],
    );
    let when = {
        let mut w = when;
        w["minProperties"] = json!(1);
        w["description"] = json!(
            "The stage runs only when every condition holds; otherwise it is skipped with the reason"
        );
        w
    };
    let condition = json!({ "type": "string", "minLength": 1, "description": "An expression over the run's variables that must hold: $VAR, 'text', ==, !=, !, &&, || and ( ); an unset variable is empty, and an operand alone holds when not empty" });
    let job = object(
        JOB_KEYS,
        json!({
            "name": name,
            "run": { "type": "string", "description": "One shell step" },
            "steps": { "type": "array", "minItems": 1, "items": step },
            "env": env,
            "pass_env": names,
            "secrets": { "description": "Names of secrets given to the job (masked in logs)", "type": "array", "items": { "type": "string" } },
            "timeout": duration,
            "retries": { "type": "integer", "minimum": 0, "maximum": MAX_RETRIES },
            "allow_failure": { "type": "boolean" },
            "runs_on": { "description": "Labels a runner must all have to run this job (it then runs only on a `gantry runner`)", "type": ["array", "string"], "items": { "type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$" }, "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$" },
            "artifacts": { "type": "array", "items": artifact },
            "needs": { "description": "Jobs to wait for (it starts as soon as they succeed, whatever its stage, and gets their artifacts) and artifacts to unpack into the job's directory before its steps: a job's name, an earlier stage's artifact's name, `{ job }` or `{ artifact }` to say which, or another project's newest succeeded artifact", "type": ["array", "string"], "items": { "oneOf": [
                { "type": "string" },
                { "type": "object", "additionalProperties": false, "required": ["job"], "properties": { "job": { "type": "string", "description": "A job of this pipeline (a matrix job: all its combinations)" } } },
                { "type": "object", "additionalProperties": false, "required": ["artifact"], "properties": { "artifact": { "type": "string", "description": "An artifact of an earlier stage of this run" } } },
                { "type": "object", "additionalProperties": false, "required": ["project", "artifact"], "properties": {
                    "project": { "type": "string" },
                    "artifact": { "type": "string" },
                    "branch": { "type": "string", "description": "Only runs of this branch" },
                    "path": { "type": "string", "description": "Where a single-file artifact is written (default: its name)" }
                } }
            ] } },
            "when": when.clone(),
            "if": condition.clone(),
            "cache": { "type": "array", "maxItems": 8, "items": object(crate::check::CACHE_KEYS, json!({
                "key": { "type": "string", "minLength": 1, "description": "Text with {{ hash('file', …) }} parts: the hash of those files of the workspace" },
                "paths": { "type": ["array", "string"], "items": { "type": "string" }, "description": "Files, directories or globs relative to the job's directory" },
                "restore_keys": { "type": "array", "items": { "type": "string", "minLength": 1 }, "description": "Prefixes tried in order when no cache has the key: the newest match is restored" }
            }), &["key", "paths"]) },
            "matrix": {
                "description": "One job per combination of the values, named `job (v1, v2)`; steps see each value as a variable named by its key. `${key}` in an artifact's name is replaced",
                "type": "object",
                "minProperties": 1,
                "properties": {
                    "exclude": { "type": "array", "items": { "type": "object", "additionalProperties": { "type": ["string", "number", "boolean"] } } },
                    "include": { "type": "array", "items": { "type": "object", "additionalProperties": { "type": ["string", "number", "boolean"] } } }
                },
                "additionalProperties": { "type": "array", "minItems": 1, "uniqueItems": true, "items": { "type": ["string", "number", "boolean"] } },
                "propertyNames": { "pattern": "^[A-Za-z_][A-Za-z0-9_]*$" }
            },
            "image": { "oneOf": [
                { "type": "string", "minLength": 1, "description": "The image the job's steps run in, a fresh container per step, the workspace at /workspace" },
                object(IMAGE_BUILD_KEYS, json!({
                    "name": name,
                    "context": { "type": "string", "description": "The build context, relative to the job's directory (default .)" },
                    "file": { "type": "string", "description": "The Dockerfile, inside the context (default Dockerfile)" },
                    "push": push
                }), &["name"])
            ] },
            "services": { "type": "array", "description": "Containers beside a job with `image:`, on its network, reached by their names", "items": object(crate::check::SERVICE_KEYS, json!({
                "name": { "type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9-]{0,62}$", "description": "The host name the steps reach it by" },
                "image": { "type": "string", "minLength": 1 },
                "env": env.clone(),
                "health": object(crate::check::SERVICE_HEALTH_KEYS, json!({ "tcp": { "type": "integer", "minimum": 1, "maximum": 65535, "description": "A port that must accept connections before the steps start" } }), &[]),
                "timeout": duration
            }), &["name", "image"]) },
            "resources": object(crate::check::RESOURCES_KEYS, json!({
                "memory": { "type": "string", "description": "Memory limit of the job's containers: 64m, 1g, 512k or bytes" },
                "cpus": { "type": "string", "description": "CPUs of the job's containers: 0.5, 1, 2" }
            }), &[]),
        }),
        &["name"],
    );
    let deploy = object(
        DEPLOY_KEYS,
        json!({
            "environment": name,
            "environments": { "type": "array", "items": name, "minItems": 1 },
            "artifact": name,
            "bake": duration,
        }),
        &["artifact"],
    );
    let stage = object(
        STAGE_KEYS,
        json!({
            "name": name,
            "when": when,
            "if": condition,
            "jobs": { "type": "array", "minItems": 1, "items": job },
            "deploy": deploy,
            "approval": object(crate::check::APPROVAL_KEYS, json!({
                "roles": { "type": "array", "minItems": 1, "uniqueItems": true, "items": { "enum": ["viewer", "deployer", "admin"] }, "description": "Roles whose tokens may approve (a higher role may too); default deployer" },
                "timeout": duration,
                "supersede": { "type": "boolean", "description": "A newer run of the branch at this stage ends this run's wait (default true)" }
            }), &[]),
        }),
        &["name"],
    );
    let shell = json!({ "type": "string", "description": "Shell text run with sh -c" });
    let target_props = crate::check::target_schemas(&shell, &env, object);
    let health = object(
        HEALTH_KEYS,
        json!({
            "http": { "type": "string", "pattern": "^/", "description": "GET this path on the release's port; 2xx is healthy" },
            "tcp": { "type": "boolean", "description": "the release's port accepts connections" },
            "command": shell,
            "timeout": duration,
            "interval": duration,
        }),
        &[],
    );
    let router = object(
        ROUTER_KEYS,
        json!({ "listen": { "type": "string", "description": "IP:PORT the environment's router listens on" } }),
        &["listen"],
    );
    let users = object(
        USERS_KEYS,
        json!({
            "header": { "type": "string", "description": "the request header naming the user (X-User)" },
            "cookie": { "type": "string", "description": "the cookie naming the user" },
            "allow": { "type": "array", "items": { "type": "string" }, "description": "users who always get the canary" },
        }),
        &[],
    );
    let canary_step = object(
        CANARY_STEP_KEYS,
        json!({
            "weight": { "type": "integer", "minimum": 0, "maximum": 100, "description": "percent of users on the canary" },
            "pause": duration,
            "approval": { "const": true, "description": "wait for `gantry promote`" },
        }),
        &[],
    );
    let analysis = object(
        ANALYSIS_KEYS,
        json!({
            "max_error_rate": { "type": "number", "minimum": 0, "maximum": 1 },
            "max_p99_ms": { "type": "integer", "minimum": 0 },
            "min_requests": { "type": "integer", "minimum": 0 },
            "compare_to_stable": { "type": "boolean" },
            "deadline": duration,
        }),
        &[],
    );
    let canary = object(
        CANARY_KEYS,
        json!({
            "users": users,
            "steps": { "type": "array", "minItems": 1, "items": canary_step },
            "analysis": analysis,
        }),
        &["steps"],
    );
    let strategy = object(STRATEGY_KEYS, json!({ "canary": canary }), &[]);
    let environment = object(
        ENVIRONMENT_KEYS,
        json!({
            "target": { "type": "object", "properties": target_props, "additionalProperties": false, "minProperties": 1, "maxProperties": 1 },
            "health": health,
            "keep": { "type": "integer", "minimum": 1 },
            "router": router,
            "strategy": strategy,
            "bake": duration,
            "keep_previous_running": duration,
        }),
        &[],
    );
    let mut root = object(
        TOP_KEYS,
        json!({
            "name": name,
            "env": env,
            "pass_env": names,
            "image": { "type": "string", "minLength": 1, "description": "The image every job's steps run in when the job names none" },
            "stages": { "type": "array", "minItems": 1, "items": stage },
            "environments": { "type": ["object", "null"], "additionalProperties": environment },
        }),
        &["stages"],
    );
    let obj = root.as_object_mut().expect("object");
    obj.insert(
        "$schema".into(),
        json!("https://json-schema.org/draft/2020-12/schema"),
    );
    obj.insert("title".into(), json!("gantry pipeline file (gantry.yml)"));
    root
}
