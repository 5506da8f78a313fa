//! The dashboard in a real browser (Chromium through chromedriver) against a real server:
//! logging in, a job's log growing without a reload, a failure's diagnosis followed to its log
//! line, a share link made and used and revoked, a rollback pressed and confirmed and served,
//! a canary's share and numbers, a viewer who sees no buttons, forged posts refused, and
//! axe-core finding no serious or critical violation on any page, light or dark. Each test
//! keeps screenshots under `$CARGO_TARGET_TMPDIR/dashboard/`.

use crate::browser::{Browser, runtime};
use crate::canary::{APPROVAL, Traffic, with_v1_live};
use crate::deploy::{Env, Service};
use crate::server_support::{Served, bare_repo, curl, request};
use crate::support::wait_until;
use std::time::Duration;

const PIPELINE: &str = r#"name: hello
stages:
  - name: build
    jobs:
      - name: slow
        run: |
          for i in $(seq 1 150); do printf '\033[32mbuilding\033[0m part %s\n' "$i"; sleep 0.1; done
      - name: long
        run: seq 1 3000 | sed 's/^/long line /'
  - name: test
    jobs:
      - name: unit
        run: |
          echo "starting the test server"
          echo "Error: listen tcp 127.0.0.1:8080: bind: Address already in use"
          exit 1
"#;

async fn accessible(b: &Browser, page: &str) {
    let found = b.accessibility().await;
    assert!(
        found.is_empty(),
        "{page}: axe found serious or critical violations:\n{}",
        found.join("\n")
    );
}

/// What a page weighs as sent (the HTML only; the stylesheet and script are cached files).
fn weight(s: &Served, cookie: &str, path: &str) -> usize {
    let c = format!("gantry_session={cookie}");
    let r = s.request("GET", path, &[("Cookie", &c)], b"");
    assert_eq!(r.status, 200, "{path}: {}", r.body);
    r.body.len()
}

#[test]
fn log_in_watch_a_log_grow_and_follow_a_diagnosis_to_its_line() {
    let dir = tempfile::tempdir().unwrap();
    bare_repo(dir.path(), PIPELINE);
    // A fixed port: the server is stopped and started again below, at the same address.
    let port = crate::support::free_port();
    let config = crate::server::config("0s").replace("127.0.0.1:0", &format!("127.0.0.1:{port}"));
    let mut s = Served::start_in(dir, &config);
    let token = s.token();
    runtime().block_on(async {
        let t0 = std::time::Instant::now();
        let b = Browser::start().await;
        eprintln!("browser up after {:?}", t0.elapsed());
        // A page needs a session: the login form, then back where we were going.
        b.goto(&format!("{}/ui/artifacts", s.url)).await;
        assert!(
            b.url().await.contains("/ui/login?next="),
            "{}",
            b.url().await
        );
        b.screenshot("login").await;
        accessible(&b, "login").await;
        // A wrong token: the form again, saying so.
        b.client
            .find(fantoccini::Locator::Css("#token"))
            .await
            .unwrap()
            .send_keys("gnt_not-a-token")
            .await
            .unwrap();
        b.click("#login").await;
        assert!(
            b.wait_js(
                Duration::from_secs(10),
                "return !!document.getElementById('login-error')"
            )
            .await
        );
        assert!(b.text("#login-error").await.contains("not valid"));
        b.login(&s.url, &token).await;
        assert!(
            b.url().await.ends_with("/ui/artifacts"),
            "{}",
            b.url().await
        );
        let cookie = b.session_cookie().await;
        eprintln!("logged in after {:?}", t0.elapsed());
        let run = s.api("POST", "/api/projects/hello/trigger", "{}").json()["run"]
            .as_i64()
            .unwrap();
        b.goto(&format!("{}/ui/runs/{run}?job=slow", s.url)).await;
        // The log grows while we look, without a reload.
        assert!(
            b.wait_js(
                Duration::from_secs(20),
                "return document.querySelectorAll('#log-lines .ln').length > 0"
            )
            .await
        );
        b.js("window.__same_page = 42; return 0").await;
        let before = b
            .js("return document.querySelectorAll('#log-lines .ln').length")
            .await
            .as_u64()
            .unwrap();
        assert!(
            b.wait_js(
                Duration::from_secs(20),
                &format!(
                    "return document.querySelectorAll('#log-lines .ln').length > {before} + 10"
                )
            )
            .await,
            "the log did not grow"
        );
        assert_eq!(
            b.js("return window.__same_page").await,
            42,
            "the page reloaded"
        );
        // ANSI colours are rendered, not shown as escapes.
        assert!(b.exists("#log-lines .ln .c2").await);
        assert!(!b.text("#log-lines").await.contains('\u{1b}'));
        b.screenshot("run-live-log").await;
        eprintln!("log grew after {:?}", t0.elapsed());
        accessible(&b, "run (running)").await;
        // The run fails; its page says why and links the evidence into the log.
        assert_eq!(s.wait_finished(run), "failed");
        b.goto(&format!("{}/ui/runs/{run}", s.url)).await;
        let why = b.text("#diagnosis").await;
        assert!(why.contains("port"), "{why}");
        b.click("#diagnosis .evidence a").await;
        assert!(
            b.wait_js(
                Duration::from_secs(10),
                "return location.hash.startsWith('#L')"
            )
            .await
        );
        let target = b
            .js("const t = document.querySelector(':target'); return t ? t.textContent : ''")
            .await;
        assert!(
            target.as_str().unwrap().contains("Address already in use"),
            "{target}"
        );
        assert!(b.url().await.contains("job=unit"));
        b.screenshot("run-diagnosis").await;
        accessible(&b, "run (failed)").await;
        // A long log: the page carries its tail; earlier lines come on demand; search.
        b.goto(&format!("{}/ui/runs/{run}?job=long", s.url)).await;
        let count = "return document.querySelectorAll('#log-lines .ln').length";
        let shown = b.js(count).await.as_u64().unwrap();
        assert!((100..=500).contains(&shown), "{shown} lines on the page");
        assert!(b.text("#log-lines").await.trim_end().ends_with("long line 3000"));
        b.click("#log-earlier").await;
        assert!(
            b.wait_js(Duration::from_secs(10), &format!("{count} > {shown}"))
                .await,
            "no earlier lines came"
        );
        b.client
            .find(fantoccini::Locator::Css("#log-search"))
            .await
            .unwrap()
            .send_keys("line 2999")
            .await
            .unwrap();
        assert!(
            b.wait_js(
                Duration::from_secs(5),
                "return document.getElementById('log-count').textContent === '1 matching lines'"
            )
            .await,
            "{}",
            b.text("#log-count").await
        );
        b.screenshot("run-long-log-search").await;
        // Re-run: a new run of the same commit, its page.
        b.click("#rerun").await;
        assert!(
            b.wait_js(
                Duration::from_secs(10),
                &format!("return location.pathname === '/ui/runs/{}'", run + 1)
            )
            .await,
            "{}",
            b.url().await
        );
        s.api("POST", &format!("/api/runs/{}/cancel", run + 1), "");
        b.goto(&format!("{}/ui", s.url)).await;
        let projects = b.text("#projects").await;
        assert!(projects.contains("main") && projects.contains("first"), "{projects}");
        b.goto(&format!("{}/ui/no/such/page", s.url)).await;
        assert!(b.text("#error-message").await.contains("no such page"));
        accessible(&b, "error page").await;
        b.goto(&format!("{}/ui", s.url)).await;
        // On a phone: nothing wider than the screen.
        b.client.set_window_size(390, 844).await.unwrap();
        assert_eq!(
            b.js("return document.documentElement.scrollWidth <= window.innerWidth").await,
            true
        );
        b.screenshot("overview-phone").await;
        b.client.set_window_size(1280, 900).await.unwrap();
        b.screenshot("overview").await;
        accessible(&b, "overview").await;
        // The whole log downloads; the page itself stays small.
        let c = format!("Cookie: gantry_session={cookie}");
        let (_, log) = curl(&[
            "-sf",
            "-H",
            &c,
            &format!("{}/ui/runs/{run}/log.txt?job=slow", s.url),
        ]);
        assert_eq!(String::from_utf8_lossy(&log).lines().count(), 150);
        let r = s.request("GET", "/ui/no/such", &[("Cookie", &format!("gantry_session={cookie}"))], b"");
        assert_eq!(r.status, 404);
        assert!(r.body.contains("no such page"), "{}", r.body);
        for path in [
            "/ui".to_string(),
            format!("/ui/runs/{run}"),
            format!("/ui/runs/{run}?job=long"),
            "/ui/artifacts".to_string(),
            "/ui/login".to_string(),
        ] {
            let w = weight(&s, &cookie, &path);
            assert!(w < 100 * 1024, "{path} weighs {w} bytes");
        }
        // The server goes away: the page says so, then says it is back, and the session
        // outlived the restart.
        s.stop();
        assert!(
            b.wait_js(
                Duration::from_secs(20),
                "const c = document.getElementById('conn'); return !c.hidden && c.classList.contains('lost')"
            )
            .await,
            "no word of the lost connection"
        );
        assert!(b.text("#conn").await.contains("lost"));
        b.screenshot("connection-lost").await;
        s.restart();
        assert!(
            b.wait_js(
                Duration::from_secs(20),
                "const c = document.getElementById('conn'); return c.classList.contains('back')"
            )
            .await,
            "no word of the connection coming back"
        );
        b.goto(&format!("{}/ui", s.url)).await;
        assert!(b.url().await.ends_with("/ui"), "logged out by a restart: {}", b.url().await);
        // Logging out ends the session: the same cookie is sent to the login form.
        b.click(".who button").await;
        assert!(
            b.wait_js(
                Duration::from_secs(10),
                "return location.pathname === '/ui/login'"
            )
            .await,
            "{}",
            b.url().await
        );
        let r = s.request(
            "GET",
            "/ui",
            &[("Cookie", &format!("gantry_session={cookie}"))],
            b"",
        );
        assert_eq!(r.status, 303, "{}", r.body);
        b.close().await;
    });
}

#[test]
fn share_an_artifact_and_roll_back_from_the_environment_page() {
    let mut env = Env::new();
    let v1 = env.build("v1", Service::Healthy);
    let v2 = env.build("v2", Service::Healthy);
    env.deploy_ok(v1);
    env.deploy_ok(v2);
    assert_eq!(env.serving(), "v2");
    let s = &env.server;
    runtime().block_on(async {
        let b = Browser::start().await;
        b.goto(&format!("{}/ui/artifacts", s.url)).await;
        b.login(&s.url, &s.token()).await;
        accessible(&b, "artifacts").await;
        // A share link with an expiry: made, copied from the page, used, revoked.
        b.click("button.share").await;
        assert!(
            b.wait_js(
                Duration::from_secs(10),
                "return !!document.getElementById('share-url')"
            )
            .await
        );
        let url = b
            .js("return document.getElementById('share-url').value")
            .await
            .as_str()
            .unwrap()
            .to_string();
        assert!(url.starts_with(&format!("{}/a/", s.url)), "{url}");
        let shown = b.text("#share").await;
        assert!(shown.contains("expires in"), "{shown}");
        b.screenshot("artifacts-share").await;
        accessible(&b, "artifacts (a share)").await;
        let (head, body) = curl(&[&url]);
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let digest = shown
            .split_whitespace()
            .find(|w| w.starts_with("sha256:"))
            .unwrap()
            .to_string();
        use sha2::Digest;
        let got = format!("sha256:{}", hex_of(&sha2::Sha256::digest(&body)));
        assert!(body.len() > 100, "{} bytes", body.len());
        assert_eq!(got, digest, "the download is the artifact");
        b.click("#revoke").await;
        assert!(
            b.wait_js(
                Duration::from_secs(10),
                "return !!document.getElementById('revoked')"
            )
            .await
        );
        let (head, _) = curl(&[&url]);
        assert!(head.starts_with("HTTP/1.1 403"), "{head}");
        // Roll back: the button, a confirmation naming what will happen, then the release
        // serving through the router.
        b.goto(&format!(
            "{}/ui/projects/hello/environments/production",
            s.url
        ))
        .await;
        assert!(b.text("#live").await.contains("#2"));
        accessible(&b, "environment").await;
        b.click("#rollback").await;
        let what = b.text("#consequence").await;
        assert!(
            what.contains("from release #2") && what.contains("release #1"),
            "{what}"
        );
        b.screenshot("confirm-rollback").await;
        accessible(&b, "confirm").await;
        b.click("#confirm").await;
        assert!(
            b.wait_js(
                Duration::from_secs(20),
                "return !!document.getElementById('done')"
            )
            .await
        );
        assert!(b.text("#done").await.contains("release #3 serves now"));
        assert!(b.text("#live").await.contains("#3"));
        assert_eq!(env.serving(), "v1");
        b.screenshot("environment-rolled-back").await;
        b.close().await;
    });
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn a_canary_shows_its_share_and_numbers_and_a_viewer_gets_no_buttons() {
    let (env, v2) = with_v1_live(APPROVAL, Service::Healthy);
    let out = env.deploy(v2, &[]);
    assert_eq!(out.code, 0, "{out}");
    assert!(wait_until(Duration::from_secs(10), || {
        env.status()["canary"]["state"] == "waiting-approval"
    }));
    let s = &env.server;
    let viewer = s
        .api(
            "POST",
            "/api/tokens",
            r#"{"name": "watcher", "role": "viewer"}"#,
        )
        .json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let page = format!("{}/ui/projects/hello/environments/production", s.url);
    runtime().block_on(async {
        let b = Browser::start().await;
        b.goto(&page).await;
        b.login(&s.url, &s.token()).await;
        assert!(b.text("#canary").await.contains("0%"));
        // Promote from the page: the canary goes to its 10% step.
        b.click("#promote").await;
        assert!(b.text("#consequence").await.contains("from 0% of users"));
        b.click("#confirm").await;
        let traffic = Traffic::start(env.router(), 50);
        // The page follows by itself: share and numbers while it runs.
        assert!(
            b.wait_js(
                Duration::from_secs(20),
                "const c = document.getElementById('canary'); const n = document.getElementById('canary-requests');
                 return !!c && c.textContent.includes('10%') && !!n && parseInt(n.textContent, 10) > 0"
            )
            .await,
            "{}",
            b.text("#env-state").await
        );
        assert!(b.exists("svg.split rect.canary").await);
        // What analysis says of the numbers now (no minimum of requests in this spec).
        assert!(
            b.text("#analysis").await.contains("within its limits"),
            "{}",
            b.text("#analysis").await
        );
        b.screenshot("canary").await;
        accessible(&b, "environment (canary)").await;
        let admin_cookie = b.session_cookie().await;
        // A viewer: the same page without one button.
        b.client.delete_all_cookies().await.unwrap();
        b.goto(&page).await;
        b.login(&s.url, &viewer).await;
        assert!(b.text("#canary").await.contains("10%"));
        for button in ["#promote", "#abort", "#pause", "#rollback", "form[action$='/act']"] {
            assert!(!b.exists(button).await, "a viewer sees {button}");
        }
        b.screenshot("viewer").await;
        accessible(&b, "environment (viewer)").await;
        let viewer_cookie = b.session_cookie().await;
        b.close().await;
        traffic.stop();
        // Forged posts: a viewer's session, and an admin's without the CSRF token; both refused
        // and the canary untouched.
        let act = "/ui/projects/hello/environments/production/act";
        for (cookie, csrf) in [(&viewer_cookie, ""), (&admin_cookie, ""), (&admin_cookie, "forged")] {
            let c = format!("gantry_session={cookie}");
            let body = format!("action=abort&csrf={csrf}");
            let r = request(
                &s.addr(),
                "POST",
                act,
                &[("Cookie", &c), ("Content-Type", "application/x-www-form-urlencoded")],
                body.as_bytes(),
            );
            assert_eq!(r.status, 403, "{}", r.body);
        }
        // Every form of the dashboard: refused without the session's CSRF token, sent to the
        // login form without a session.
        let digest = format!("sha256:{}", "0".repeat(64));
        let forms = [
            ("/ui/logout", "x=1".to_string()),
            ("/ui/runs/1/cancel", "x=1".to_string()),
            ("/ui/runs/1/rerun", "x=1".to_string()),
            ("/ui/shares", format!("digest={digest}&expires=1h")),
            ("/ui/shares/1/revoke", "x=1".to_string()),
            (act, "action=rollback".to_string()),
        ];
        for (path, body) in &forms {
            let c = format!("gantry_session={admin_cookie}");
            let form = [("Content-Type", "application/x-www-form-urlencoded")];
            let r = request(&s.addr(), "POST", path, &[form[0], ("Cookie", &c)], body.as_bytes());
            assert_eq!(r.status, 403, "{path} without CSRF: {}", r.body);
            let r = request(&s.addr(), "POST", path, &form, body.as_bytes());
            assert_eq!(r.status, 303, "{path} without a session: {}", r.body);
        }
    });
    assert_eq!(env.status()["canary"]["state"], "waiting-approval");
    assert_eq!(env.status()["canary"]["percent"], 10);
}

/// `gantry dashboard` prints a one-time login link: it opens a session as the token that
/// asked (a viewer here), once; a second visit, a made-up code and a caller with no token get
/// nothing.
#[test]
fn a_login_link_opens_one_session_once() {
    let dir = tempfile::tempdir().unwrap();
    bare_repo(dir.path(), PIPELINE);
    let s = Served::start_in(dir, &crate::server::config("0s"));
    let viewer = s
        .api(
            "POST",
            "/api/tokens",
            r#"{"name": "watcher", "role": "viewer"}"#,
        )
        .json()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let elsewhere = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_gantry"))
        .args(["--server", &s.url, "dashboard"])
        .current_dir(elsewhere.path())
        .env_remove("GANTRY_HOME")
        .env("GANTRY_TOKEN", &viewer)
        .output()
        .unwrap();
    let out = crate::support::Run::from(out);
    assert_eq!(out.code, 0, "{out}");
    assert!(out.stderr.contains("works once"), "{out}");
    let url = out.stdout.trim().to_string();
    let path = url.strip_prefix(&s.url).expect("a link to this server");
    assert!(path.starts_with("/ui/login/link/"), "{url}");
    // No cookie yet: the overview sends us to the login form.
    assert_eq!(s.request("GET", "/ui", &[], b"").status, 303);
    let opened = s.request("GET", path, &[], b"");
    assert_eq!(opened.status, 200, "{}", opened.body);
    assert!(
        opened.body.contains("Logged in as <code>watcher</code>"),
        "{}",
        opened.body
    );
    let set = opened.header("set-cookie").expect("a session cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    let cookie = set.split(';').next().unwrap().to_string();
    let page = s.request("GET", "/ui", &[("Cookie", &cookie)], b"");
    assert_eq!(page.status, 200, "{}", page.body);
    assert!(page.body.contains("watcher"), "{}", page.body);
    // Once only, and the code is in no cookie the server set.
    let code = path.rsplit('/').next().unwrap();
    assert!(!cookie.contains(code));
    let again = s.request("GET", path, &[], b"");
    assert_eq!(again.status, 410, "{}", again.body);
    assert!(
        again.body.contains("used already or has expired"),
        "{}",
        again.body
    );
    assert!(again.header("set-cookie").is_none());
    let made_up = format!("/ui/login/link/{}", "ab".repeat(32));
    assert_eq!(s.request("GET", &made_up, &[], b"").status, 410);
    let anonymous = s.request("POST", "/api/login-links", &[], b"");
    assert_eq!(anonymous.status, 401, "{}", anonymous.body);
}
