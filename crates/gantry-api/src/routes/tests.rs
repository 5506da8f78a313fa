//! Tests of the route table: every route has a handler, the OpenAPI document matches the types.

use super::*;

/// Every `$ref` in `v`, as written.
fn refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                match (k.as_str(), x) {
                    ("$ref", Value::String(r)) => out.push(r.clone()),
                    _ => refs(x, out),
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| refs(x, out)),
        _ => {}
    }
}

#[test]
fn every_reference_of_the_document_resolves() {
    let doc = openapi_document();
    let mut all = Vec::new();
    refs(&doc, &mut all);
    assert!(all.len() > 20, "{all:?}");
    for r in all {
        let pointer = r.strip_prefix('#').expect("a local reference");
        assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
    }
}

#[test]
fn typed_routes_carry_their_bodies() {
    let doc = openapi_document();
    let deploy = &doc["paths"]["/api/projects/{project}/environments/{environment}/deploy"]["post"];
    assert_eq!(deploy["requestBody"]["required"], true);
    assert_eq!(
        deploy["requestBody"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/DeployBody"
    );
    assert_eq!(
        deploy["responses"]["200"]["content"]["application/json"]["schema"]["$ref"],
        "#/components/schemas/DeployOutcome"
    );
    let body = &doc["components"]["schemas"]["DeployBody"];
    assert_eq!(body["required"], json!(["artifact"]));
    assert_eq!(body["additionalProperties"], false);
    let rollback =
        &doc["paths"]["/api/projects/{project}/environments/{environment}/rollback"]["post"];
    assert_eq!(rollback["requestBody"]["required"], false);
    let list = &doc["paths"]["/api/environments"]["get"]["responses"]["200"]["content"]["application/json"]
        ["schema"];
    assert_eq!(list["type"], "array");
    assert_eq!(list["items"]["$ref"], "#/components/schemas/EnvStatus");
    let state = &doc["components"]["schemas"]["ReleaseState"];
    let names: Vec<&str> = state["oneOf"]
        .as_array()
        .map(|a| a.iter().filter_map(|v| v["const"].as_str()).collect())
        .or_else(|| {
            state["enum"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect())
        })
        .unwrap_or_default();
    assert!(names.contains(&"rolled-back"), "{state}");
}

/// The schema of a type names exactly the fields its values serialize with: a sample of
/// each answer, serialized, has every required property and none the schema lacks.
#[test]
fn schemas_describe_what_is_sent() {
    let release = types::Release {
        id: 1,
        project: "p".into(),
        environment: "e".into(),
        number: 1,
        kind: types::ReleaseKind::Deploy,
        source: 1,
        artifact: "app".into(),
        digest: format!("sha256:{}", "0".repeat(64)),
        run_id: Some(3),
        commit: None,
        created_by: "cli".into(),
        created_at: 1,
        state: types::ReleaseState::Live,
        reason: None,
        live_at: Some(2),
        ended_at: None,
        retired_at: None,
    };
    let status = types::EnvStatus {
        project: "p".into(),
        environment: "e".into(),
        target: Some("process".into()),
        router: Some("127.0.0.1:1".into()),
        live: Some(release.clone()),
        previous: None,
        health: "healthy".into(),
        health_detail: None,
        uptime_ms: Some(5),
        restarts: Some(0),
        pid: Some(9),
        log: None,
        running: vec![1],
        lock: None,
        driver: None,
        canary: None,
        traffic: Vec::new(),
    };
    let samples: Vec<(&str, Value)> = vec![
        ("Release", serde_json::to_value(&release).unwrap()),
        ("EnvStatus", serde_json::to_value(&status).unwrap()),
        (
            "DeployOutcome",
            serde_json::to_value(types::DeployOutcome {
                release: Some(release.clone()),
                succeeded: false,
                message: "m".into(),
                error: Some(types::ErrorDetail {
                    code: "deploy_failed".into(),
                    message: "m".into(),
                }),
            })
            .unwrap(),
        ),
    ];
    let run = types::Run {
        id: 7,
        project: "p".into(),
        repo: "/r".into(),
        commit: "c".repeat(40),
        branch: Some("main".into()),
        pipeline_file: "gantry.yml".into(),
        trigger: "manual".into(),
        event: "manual".into(),
        vars: [("VERSION".to_string(), "1.2".to_string())].into(),
        status: gantry_model::RunStatus::Failed,
        created_at: 1,
        started_at: Some(2),
        finished_at: Some(3),
        error: None,
        owner: None,
    };
    let diagnosis = types::RunDiagnosis {
        run: run.clone(),
        diagnosis: gantry_engine::why::Diagnosis {
            category: gantry_engine::why::rules::Category::TestFailure,
            sentence: "s".into(),
            fix: "f".into(),
            rule: Some("r".into()),
            evidence: vec![gantry_engine::why::Evidence {
                job: Some("test".into()),
                step: Some("cargo test".into()),
                line: 3,
                text: "FAILED".into(),
            }],
            failing_tests: vec!["t".into()],
        },
        changes: Default::default(),
    };
    let mut samples = samples;
    samples.push(("Run", serde_json::to_value(&run).unwrap()));
    samples.push(("RunDiagnosis", serde_json::to_value(&diagnosis).unwrap()));
    samples.push((
        "Diagnosis",
        serde_json::to_value(&diagnosis.diagnosis).unwrap(),
    ));
    samples.push(("Changes", serde_json::to_value(&diagnosis.changes).unwrap()));
    let doc = openapi_document();
    for (name, value) in samples {
        let schema = &doc["components"]["schemas"][name];
        let props = schema["properties"].as_object().expect(name);
        let sent = value.as_object().unwrap();
        for key in sent.keys() {
            assert!(
                props.contains_key(key),
                "{name}.{key} is sent but not in the schema"
            );
        }
        for key in schema["required"].as_array().into_iter().flatten() {
            assert!(
                sent.contains_key(key.as_str().unwrap()),
                "{name}.{key} is required but not sent"
            );
        }
    }
}
