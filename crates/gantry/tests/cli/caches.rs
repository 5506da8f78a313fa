//! Job caches (issue 18) through `gantry run`: saved once, restored by the next run, found by a
//! restore key when the lockfile changes, a corrupt object refused and rebuilt, listed and
//! removed with `gantry cache`.

use crate::support::Fixture;

const PIPELINE: &str = "//- gantry.yml
stages:
  - name: build
    jobs:
      - name: compile
        cache:
          - key: \"deps-{{ hash('deps.lock') }}\"
            paths: [vendor/]
            restore_keys: [\"deps-\"]
        run: |
          if [ -f vendor/fetched ]; then echo \"warm: $(cat vendor/fetched)\"; else echo cold; fi
          mkdir -p vendor && echo \"fetched for $(cat deps.lock)\" > vendor/fetched
//- deps.lock
serde 1.0
";

fn caches(f: &Fixture) -> Vec<serde_json::Value> {
    let out = f.run(&["cache", "ls", "--json"]);
    assert_eq!(out.code, 0, "{out}");
    serde_json::from_str::<serde_json::Value>(&out.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

#[test]
fn a_cache_is_saved_once_restored_found_by_prefix_and_a_corrupt_one_is_rebuilt() {
    let f = Fixture::new(PIPELINE);
    let run = |n: i64| -> String {
        let out = f.run(&["run"]);
        assert_eq!(out.code, 0, "{out}");
        f.run(&["logs", &n.to_string()]).stdout
    };
    let first = run(1);
    assert!(first.contains("| cold"), "{first}");
    assert!(first.contains("no cache for `deps-"), "{first}");
    assert!(first.contains("saved cache `deps-"), "{first}");
    let saved = caches(&f);
    assert_eq!(saved.len(), 1, "{saved:?}");
    let key = saved[0]["key"].as_str().unwrap().to_string();

    // The same lockfile: restored, and kept as it was (saved once).
    let second = run(2);
    assert!(second.contains("warm: fetched for serde 1.0"), "{second}");
    assert!(
        second.contains(&format!("restored cache `{key}`")),
        "{second}"
    );
    assert!(second.contains("is kept as it was"), "{second}");
    assert_eq!(caches(&f).len(), 1);
    // gantry's steps show beside the job's own.
    let shown = f.show(2);
    let steps: Vec<&str> = shown["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(steps.first(), Some(&"restore caches"), "{steps:?}");
    assert_eq!(steps.last(), Some(&"save caches"), "{steps:?}");

    // A new lockfile: a new key, found by its prefix, then saved under the new key.
    f.commit("//- deps.lock\nserde 1.1\n", "bump serde");
    let third = run(3);
    assert!(third.contains("warm: fetched for serde 1.0"), "{third}");
    assert!(third.contains("by its prefix"), "{third}");
    let now = caches(&f);
    assert_eq!(now.len(), 2, "{now:?}");
    let newest = now
        .iter()
        .find(|c| c["key"] != key.as_str())
        .unwrap()
        .clone();

    // Its object corrupted on disk: refused, forgotten, and rebuilt by the next run.
    let digest = newest["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    let object = f
        .data()
        .join("artifacts/objects/sha256")
        .join(&digest[..2])
        .join(digest);
    let object = if object.exists() {
        object
    } else {
        f.data().join("artifacts/objects/sha256").join(digest)
    };
    assert!(object.exists(), "no object at {}", object.display());
    let mut bytes = std::fs::read(&object).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&object, bytes).unwrap();
    let fourth = run(4);
    assert!(fourth.contains("is not restored"), "{fourth}");
    assert!(fourth.contains("| cold"), "{fourth}");
    assert!(
        fourth.contains(&format!(
            "saved cache `{}`",
            newest["key"].as_str().unwrap()
        )),
        "{fourth}"
    );
    let fifth = run(5);
    assert!(fifth.contains("warm: fetched for serde 1.1"), "{fifth}");

    // gantry cache rm, by key and by prefix.
    let project = newest["project"].as_str().unwrap().to_string();
    let rm = f.run(&["cache", "rm", &project, &key]);
    assert_eq!(rm.code, 0, "{rm}");
    assert_eq!(caches(&f).len(), 1);
    let rm = f.run(&["cache", "rm", &project, "deps-", "--prefix"]);
    assert_eq!(rm.code, 0, "{rm}");
    assert!(caches(&f).is_empty());
    let none = f.run(&["cache", "rm", &project, "nope"]);
    assert_ne!(none.code, 0);
    assert!(none.stderr.contains("has no cache `nope`"), "{none}");
}
