//! The data plane's control protocol against a real data plane in a temporary directory: a
//! table set is served and on disk before the answer, a second data plane on the directory is
//! refused naming the first, one started again serves the last tables on the same address,
//! what is not a request is refused without ending the data plane, and a directory whose data
//! plane this process is stopping gets no new one.

use super::*;
use std::io::{BufRead, BufReader, Write};
use std::time::Duration;

fn backend(release: i64, port: u16) -> BackendWire {
    BackendWire {
        release,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
    }
}

async fn started(dir: &Path) -> (Arc<DataPlane>, tokio::task::JoinHandle<anyhow::Result<()>>) {
    let data = dir.to_path_buf();
    let task = tokio::spawn(async move { run(&data, false).await });
    let plane = DataPlane::new(dir, None);
    plane.hello().await.expect("the data plane answers");
    (plane, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tables_are_on_disk_before_the_answer_and_come_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let (plane, task) = started(dir.path()).await;
    let link = plane
        .router("p/e", SocketAddr::from(([127, 0, 0, 1], 0)))
        .await
        .unwrap();
    let addr = link.addr;
    assert_ne!(addr.port(), 0);
    let table = TableWire {
        stable: Some(backend(2, 1)),
        canary: Some(CanaryWire {
            backend: backend(3, 2),
            share: 1_000,
            header: Some("x-user".into()),
            cookie: None,
            allow: vec!["alice".into()],
        }),
        fallback: Some(backend(2, 1)),
    };
    link.set(table.build(&[])).await.unwrap();
    // On disk as answered.
    let routes: Routes =
        serde_json::from_str(&std::fs::read_to_string(routes_path(dir.path())).unwrap()).unwrap();
    assert_eq!(routes["p/e"].table, table);
    assert_eq!(routes["p/e"].addr, Some(addr));

    // A second data plane on the directory is refused, naming the first.
    let err = run(dir.path(), false).await.unwrap_err().to_string();
    assert!(
        err.contains(&format!("pid {}", std::process::id())) && err.contains("--replace"),
        "{err}"
    );

    // What is not a request is refused; the connection and the data plane go on.
    let mut raw = std::os::unix::net::UnixStream::connect(socket_path(dir.path())).unwrap();
    raw.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    raw.write_all(b"{\"op\":\"drop_everything\"}\n{\"op\":\"hello\"}\n")
        .unwrap();
    let mut lines = BufReader::new(raw.try_clone().unwrap()).lines();
    let refused = lines.next().unwrap().unwrap();
    assert!(
        refused.contains("refused") && refused.contains("not a request"),
        "{refused}"
    );
    assert!(lines.next().unwrap().unwrap().contains("hello"));

    // Stopped and started again: the same address, the same table.
    assert!(stop(dir.path()).await.unwrap());
    task.await.unwrap().unwrap();
    assert!(!socket_path(dir.path()).exists());
    let (plane, task) = started(dir.path()).await;
    let (again, served) = plane.table("p/e").await.unwrap();
    assert_eq!(again, Some(addr));
    assert_eq!(served, table);
    assert!(stop(dir.path()).await.unwrap());
    task.await.unwrap().unwrap();
    // Nothing answers now: stopping again says so at once.
    assert!(!stop(dir.path()).await.unwrap());
}

#[tokio::test]
async fn a_directory_whose_data_plane_is_being_stopped_gets_no_new_one() {
    let dir = tempfile::tempdir().unwrap();
    // Were a start allowed, this would start `/bin/true` as the data plane (and wait for it
    // to answer, in vain, for 20 s).
    let plane = DataPlane::new(dir.path(), Some(PathBuf::from("/bin/true")));
    never_restart(dir.path());
    let err = plane.hello().await.unwrap_err().to_string();
    assert!(err.contains("is being stopped by this process"), "{err}");
    assert!(
        !dir.path().join("dataplane.log").exists(),
        "nothing was started"
    );
}
