//! Share links of artifacts as an outside service uses them: plain curl, Range, ETag, stable
//! links that redirect, and everything altered, revoked or expired refused.

use crate::server::config;
use crate::server_support::{Served, bare_repo, curl, curl_followed, status_of};
use crate::support::wait_until;
use std::time::Duration;

/// The CLI on the server's machine: its data directory, the local admin token.
fn gantry_of(s: &Served, args: &[&str]) -> crate::support::Run {
    std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(args)
        .env("GANTRY_HOME", s.data())
        .env_remove("GANTRY_SERVER")
        .env_remove("GANTRY_TOKEN")
        .output()
        .unwrap()
        .into()
}

#[test]
fn share_links_work_with_plain_curl_and_refuse_everything_else() {
    use sha2::{Digest, Sha256};
    let dir = tempfile::tempdir().unwrap();
    let pipeline = "stages:\n  - name: build\n    jobs:\n      - name: make\n        run: |\n          mkdir -p dist && head -c 300000 /dev/urandom > dist/blob && echo hello > dist/readme\n          printf '{\"version\": 1}' > report.json\n        artifacts:\n          - { name: site, path: dist/ }\n          - { name: report, path: report.json }\n";
    bare_repo(dir.path(), pipeline);
    let s = Served::start_in(dir, &config("0s"));
    let id = s.api("POST", "/api/projects/hello/trigger", "{}").json()["run"]
        .as_i64()
        .unwrap();
    assert_eq!(s.wait_finished(id), "succeeded");
    let arts = s
        .api("GET", &format!("/api/runs/{id}/artifacts"), "")
        .json();
    let site = arts["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "site")
        .unwrap()
        .clone();

    // The CLI prints a link; plain curl downloads it, sha256 matches the digest.
    let cli = |args: &[&str]| gantry_of(&s, args);
    let shared = cli(&["artifact", "share", "site", "--expires", "10m"]);
    assert_eq!(shared.code, 0, "{shared}");
    let url = shared.stdout.trim().to_string();
    assert!(url.starts_with(&format!("{}/a/", s.url)), "{url}");
    let (head, body) = curl(&[&url]);
    assert_eq!(status_of(&head), 200, "{head}");
    assert_eq!(
        format!("sha256:{}", hex::encode(Sha256::digest(&body))),
        site["digest"].as_str().unwrap()
    );
    assert_eq!(body.len() as i64, site["size"].as_i64().unwrap());
    let lower = head.to_ascii_lowercase();
    assert!(
        lower.contains(&format!("etag: \"{}\"", site["digest"].as_str().unwrap())),
        "{head}"
    );
    assert!(
        lower.contains("content-disposition: attachment; filename=\"site-")
            && lower.contains(".tar.zst\""),
        "{head}"
    );
    assert!(
        lower.contains(&format!("content-length: {}", body.len())),
        "{head}"
    );

    // Range and If-None-Match.
    let (head, part) = curl(&["-r", "10-19", &url]);
    assert_eq!(status_of(&head), 206, "{head}");
    assert_eq!(part, body[10..20]);
    assert!(
        head.to_ascii_lowercase()
            .contains(&format!("content-range: bytes 10-19/{}", body.len())),
        "{head}"
    );
    let etag = format!("If-None-Match: \"{}\"", site["digest"].as_str().unwrap());
    assert_eq!(status_of(&curl(&["-H", &etag, &url]).0), 304);
    let (head, _) = curl(&["-r", "999999999-", &url]);
    assert_eq!(status_of(&head), 416);

    // Tampered: any changed character of the link is refused, with a JSON error.
    let path = url.trim_start_matches(&s.url).to_string();
    let (id_part, rest) = path.trim_start_matches("/a/").split_once('.').unwrap();
    let (expires, mac) = rest.split_once('.').unwrap();
    let flipped = format!(
        "{}{}",
        &mac[..mac.len() - 1],
        if mac.ends_with('0') { '1' } else { '0' }
    );
    let other_id = (id_part.parse::<i64>().unwrap() + 1).to_string();
    let later = (expires.parse::<i64>().unwrap() + 3_600_000).to_string();
    for bad in [
        format!("/a/{id_part}.{expires}.{flipped}"),
        format!("/a/{other_id}.{expires}.{mac}"),
        format!("/a/{id_part}.{later}.{mac}"),
        format!("/a/{id_part}.{expires}"),
        "/a/..%2F..%2F..%2Fetc%2Fpasswd".to_string(),
        format!("/a/{id_part}.{expires}.{mac}/../../../etc/passwd"),
        "/a/%2e%2e".to_string(),
        "/a/1.1.".to_string(),
    ] {
        let (head, body) = curl(&[&format!("{}{bad}", s.url)]);
        let status = status_of(&head);
        assert!(status == 403 || status == 404, "{bad}: {head}");
        let text = String::from_utf8_lossy(&body);
        assert!(
            text.contains("\"error\"") && !text.contains("root:") && !text.contains("sha256:"),
            "{bad}: {text}"
        );
    }

    // Revoked: 403. Expired: 410.
    let share_id = id_part.to_string();
    let revoked = cli(&["artifact", "revoke", &share_id]);
    assert_eq!(revoked.code, 0, "{revoked}");
    let (head, body) = curl(&[&url]);
    assert_eq!(status_of(&head), 403);
    assert!(String::from_utf8_lossy(&body).contains("revoked"));
    let short = s.api(
        "POST",
        "/api/artifacts/shares",
        r#"{"name":"report","expires":"1s"}"#,
    );
    assert_eq!(short.status, 201, "{}", short.body);
    let short_url = short.json()["url"].as_str().unwrap().to_string();
    assert_eq!(status_of(&curl(&[&short_url]).0), 200);
    assert!(wait_until(Duration::from_secs(10), || status_of(
        &curl(&[&short_url]).0
    ) == 410));
    let (_, body) = curl(&[&short_url]);
    assert!(String::from_utf8_lossy(&body).contains("expired"));

    // A stable link: redirects to a fresh short-lived link each time; tampered or revoked: 403.
    let stable = cli(&["artifact", "share", "site", "--stable"]);
    assert_eq!(stable.code, 0, "{stable}");
    let stable_url = stable.stdout.trim().to_string();
    assert!(
        stable_url.starts_with(&format!("{}/s/", s.url)),
        "{stable_url}"
    );
    let (head, _) = curl(&[&stable_url]);
    assert_eq!(status_of(&head), 302, "{head}");
    assert!(head.contains(&format!("ocation: {}/a/", s.url)), "{head}");
    let got = curl_followed(&stable_url);
    assert_eq!(
        format!("sha256:{}", hex::encode(Sha256::digest(&got))),
        site["digest"].as_str().unwrap()
    );
    let flipped_stable = format!(
        "{}{}",
        &stable_url[..stable_url.len() - 1],
        if stable_url.ends_with('0') { '1' } else { '0' }
    );
    for bad in [
        flipped_stable,
        format!("{}/s/..%2F..%2Fetc%2Fpasswd", s.url),
        format!("{}/s/{}", s.url, &stable_url[stable_url.len() - 64..]),
    ] {
        let (head, body) = curl(&[&bad]);
        let status = status_of(&head);
        assert!(status == 403 || status == 404, "{bad}: {head}");
        assert!(!String::from_utf8_lossy(&body).contains("sha256:"));
    }
    let stable_id = stable.stderr.split_whitespace().nth(2).unwrap().to_string();
    assert_eq!(cli(&["artifact", "revoke", &stable_id]).code, 0);
    assert_eq!(status_of(&curl(&[&stable_url]).0), 403);
    // Presigned URLs need an S3 store; this one is on local disk.
    let presign = cli(&["artifact", "share", "site", "--presign"]);
    assert_eq!(presign.code, 1, "{presign}");
    assert!(
        presign
            .stderr
            .contains("presigned URLs need an S3 artifact store"),
        "{presign}"
    );

    // `artifact get` copies with a digest check; a corrupt object writes nothing.
    let out_file = s.dir.path().join("report-copy.json");
    let got = cli(&[
        "artifact",
        "get",
        "report",
        "-o",
        out_file.to_str().unwrap(),
    ]);
    assert_eq!(got.code, 0, "{got}");
    assert_eq!(
        std::fs::read_to_string(&out_file).unwrap(),
        "{\"version\": 1}"
    );
    let report = arts["artifacts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == "report")
        .unwrap();
    let hexd = report["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    std::fs::write(
        s.data()
            .join("artifacts/objects/sha256")
            .join(&hexd[..2])
            .join(hexd),
        "tampered",
    )
    .unwrap();
    let verify = cli(&["artifact", "verify", "report"]);
    assert_eq!(verify.code, 1, "{verify}");
    assert!(verify.stderr.contains("it is corrupt"), "{verify}");
    assert_eq!(cli(&["artifact", "verify", "site"]).code, 0);
    let bad_out = s.dir.path().join("bad.json");
    let bad = cli(&["artifact", "get", "report", "-o", bad_out.to_str().unwrap()]);
    assert_eq!(bad.code, 1);
    assert!(bad.stderr.contains("corrupt"), "{bad}");
    assert!(!bad_out.exists());
    let ls = cli(&["artifact", "ls"]);
    assert!(
        ls.stdout.contains("site") && ls.stdout.contains("report"),
        "{ls}"
    );
}

/// `gantry artifact rotate-share-key` (admin): every link made before — expiring and stable —
/// is refused from then on, new links work, and the new key survives a restart. A viewer
/// cannot rotate it.
#[test]
fn rotating_the_share_key_refuses_every_earlier_link() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = "stages:\n  - name: build\n    jobs:\n      - name: make\n        run: echo hello > report.txt\n        artifacts:\n          - { name: report, path: report.txt }\n";
    bare_repo(dir.path(), pipeline);
    let mut s = Served::start_in(dir, &config("0s"));
    let id = s.api("POST", "/api/projects/hello/trigger", "{}").json()["run"]
        .as_i64()
        .unwrap();
    assert_eq!(s.wait_finished(id), "succeeded");
    let cli = gantry_of;
    let link = |s: &Served, extra: &[&str]| {
        let mut args = vec!["artifact", "share", "report"];
        args.extend_from_slice(extra);
        let out = cli(s, &args);
        assert_eq!(out.code, 0, "{out}");
        out.stdout.trim().to_string()
    };
    let fetch = |url: &str| status_of(&curl(&[url]).0);
    let old = link(&s, &["--expires", "1h"]);
    let old_stable = link(&s, &["--stable"]);
    assert_eq!(fetch(&old), 200);
    assert_eq!(
        status_of(&curl(&[&old_stable]).0) / 100,
        3,
        "stable links redirect"
    );

    // A viewer may not rotate it.
    let viewer = s
        .api("POST", "/api/tokens", r#"{"name": "v", "role": "viewer"}"#)
        .json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let r = s.request(
        "POST",
        "/api/share-key/rotate",
        &[("Authorization", &format!("Bearer {viewer}"))],
        b"{}",
    );
    assert_eq!(r.status, 403, "{}", r.body);
    assert_eq!(fetch(&old), 200);

    let out = cli(&s, &["artifact", "rotate-share-key"]);
    assert_eq!(out.code, 0, "{out}");
    assert!(
        out.stdout.contains("every link made before now is refused"),
        "{out}"
    );
    assert_eq!(fetch(&old), 403);
    assert_eq!(fetch(&old_stable), 403);
    let new = link(&s, &["--expires", "1h"]);
    assert_eq!(fetch(&new), 200);

    // After a restart (on another port: the links are the same but for the address).
    let before = s.url.clone();
    s.stop();
    s.restart();
    let here = |u: &str| u.replace(&before, &s.url);
    assert_eq!(fetch(&here(&new)), 200, "the new key is the one kept");
    assert_eq!(fetch(&here(&old)), 403);
}

/// `public_url`: the links the server hands out name it, not the address it listens on (a
/// server on port 0 behind a proxy keeps its links across restarts).
#[test]
fn share_links_name_the_public_url() {
    let dir = tempfile::tempdir().unwrap();
    let pipeline = "stages:\n  - name: build\n    jobs:\n      - name: make\n        run: echo hello > report.txt\n        artifacts:\n          - { name: report, path: report.txt }\n";
    bare_repo(dir.path(), pipeline);
    let toml = format!("public_url = \"https://ci.example.com/\"\n{}", config("0s"));
    let s = Served::start_in(dir, &toml);
    let id = s.api("POST", "/api/projects/hello/trigger", "{}").json()["run"]
        .as_i64()
        .unwrap();
    assert_eq!(s.wait_finished(id), "succeeded");
    let out = gantry_of(&s, &["artifact", "share", "report"]);
    assert_eq!(out.code, 0, "{out}");
    let url = out.stdout.trim();
    assert!(url.starts_with("https://ci.example.com/a/"), "{url}");
    // The same link through the address the server listens on works.
    let local = url.replace("https://ci.example.com", &s.url);
    assert_eq!(status_of(&curl(&[&local]).0), 200);
}
