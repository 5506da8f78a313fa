//! The adapter against a real engine: podman serving the Docker Engine API (`.ci/run` starts it;
//! see shared/notes/containers.md). Images are built FROM scratch with static busybox — no
//! registry can be reached here. Every test removes the containers and images it made.
#![allow(clippy::disallowed_methods)] // Tests build images with podman.

use gantry_docker::{ContainerSpec, Engine, ImageInfo};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// Builds `tag`: static busybox serving a page that says `page` on port 8080.
fn build_image(dir: &Path, tag: &str, page: &str) {
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::copy("/bin/busybox", dir.join("busybox")).unwrap();
    std::fs::write(dir.join("www/index.html"), page).unwrap();
    std::fs::write(
        dir.join("Dockerfile"),
        "FROM scratch\nCOPY busybox /bin/busybox\nCOPY www /www\n\
         ENTRYPOINT [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
    )
    .unwrap();
    let out = Command::new("podman")
        .args(["build", "-q", "-t", tag])
        .arg(dir)
        .output()
        .expect("podman is installed (.ci/run installs it)");
    assert!(
        out.status.success(),
        "podman build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn get(port: u16) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(b"GET / HTTP/1.0\r\nHost: x\r\n\r\n")
        .await
        .ok()?;
    let mut body = String::new();
    s.read_to_string(&mut body).await.ok()?;
    Some(body)
}

/// Saved, removed from the engine, loaded back: the same id; a container of it serves its page,
/// is found by its labels, stops and is removed.
#[tokio::test]
async fn an_image_saved_as_an_archive_comes_back_and_serves() {
    let engine = Engine::connect(None)
        .await
        .expect("a Docker engine (podman)");
    let dir = tempfile::tempdir().unwrap();
    let tag = format!("gantry-test-engine-{}:v1", std::process::id());
    build_image(&dir.path().join("ctx"), &tag, "hello from one");

    let saved = engine
        .save(&tag, &dir.path().join("artifact"))
        .await
        .unwrap();
    assert!(
        saved.id.starts_with("sha256:") || saved.id.len() == 64,
        "{saved:?}"
    );
    assert_eq!(
        ImageInfo::read(&dir.path().join("artifact")).unwrap(),
        saved
    );
    engine.remove_image(&saved.id).await.unwrap();
    assert!(engine.image(&saved.id).await.unwrap().is_none());
    engine
        .load(&dir.path().join("artifact/image.tar"), &saved.id)
        .await
        .unwrap();
    assert_eq!(engine.image(&saved.id).await.unwrap().unwrap().id, saved.id);

    let port = free_port();
    let label = format!("engine-test-{}", std::process::id());
    let id = engine
        .create(&ContainerSpec {
            name: label.clone(),
            image: saved.id.clone(),
            port: 8080,
            host_port: port,
            labels: vec![("gantry.instance".into(), label.clone())],
            memory_bytes: Some(64 << 20),
            ..Default::default()
        })
        .await
        .unwrap();
    engine.start(&id).await.unwrap();
    let mut page = None;
    for _ in 0..50 {
        page = get(port).await.filter(|b| b.contains("hello from one"));
        if page.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let found = engine.list(&[("gantry.instance", &label)]).await.unwrap();
    let state = engine.inspect(&id).await.unwrap().unwrap();
    engine.stop(&id, Duration::from_secs(1)).await.unwrap();
    let stopped = engine.inspect(&id).await.unwrap().unwrap();
    engine.remove(&id).await.unwrap();
    let gone = engine.inspect(&id).await.unwrap();
    engine.remove_image(&saved.id).await.unwrap();

    assert!(page.is_some(), "the container served its page");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].id, id);
    assert!(state.running && state.pid.is_some(), "{state:?}");
    assert!(!stopped.running, "{stopped:?}");
    assert!(gone.is_none());
}

/// Asking for what is not there says so, with the engine's address.
#[tokio::test]
async fn missing_things_are_named() {
    let engine = Engine::connect(None)
        .await
        .expect("a Docker engine (podman)");
    let dir = tempfile::tempdir().unwrap();
    let err = engine
        .save("gantry-test-no-such-image:v9", dir.path())
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("gantry-test-no-such-image:v9 does not exist"),
        "{err}"
    );
    assert!(err.contains(engine.host()), "{err}");
    assert!(!dir.path().join("image.tar").exists());

    let err = Engine::connect(Some("unix:///nonexistent/docker.sock"))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("no Docker engine at unix:///nonexistent/docker.sock"),
        "{err}"
    );
}
