//! A real browser for the dashboard's tests: Debian's Chromium, headless, driven through
//! chromedriver (started on a free port of 127.0.0.1 in its own process group, killed with
//! it when the test ends), with axe-core injected to check accessibility and screenshots kept
//! under `$CARGO_TARGET_TMPDIR/dashboard/`.

use crate::support::{free_port, wait_until};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct Browser {
    pub client: Client,
    driver: Child,
    driver_url: String,
    _profile: tempfile::TempDir,
}

/// Where axe-core's script is: `$GANTRY_AXE_JS`, else where `.ci/run` installs it.
fn axe_source() -> String {
    let path = std::env::var_os("GANTRY_AXE_JS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/npm/node_modules/axe-core/axe.min.js")
        });
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "axe-core is needed at {} ({e}): `npm install --prefix target/npm axe-core` (.ci/run does)",
            path.display()
        )
    })
}

pub fn screenshots() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Browser {
    pub async fn start() -> Self {
        let port = free_port();
        let driver = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .arg("--allowed-ips=127.0.0.1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver (Debian's chromium-driver) must be installed");
        let driver_url = format!("http://127.0.0.1:{port}");
        let addr = format!("127.0.0.1:{port}");
        assert!(
            wait_until(Duration::from_secs(20), || std::net::TcpStream::connect(
                &addr
            )
            .is_ok()),
            "chromedriver did not listen"
        );
        let profile = tempfile::tempdir().unwrap();
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                    "--no-first-run", "--disable-background-networking",
                    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", profile.path().display()),
                ]
            }),
        );
        let client = ClientBuilder::rustls()
            .expect("rustls")
            .capabilities(caps)
            .connect(&driver_url)
            .await
            .expect("a Chromium session");
        Browser {
            client,
            driver,
            driver_url,
            _profile: profile,
        }
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    pub async fn text(&self, css: &str) -> String {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .text()
            .await
            .unwrap()
    }

    pub async fn exists(&self, css: &str) -> bool {
        !self
            .client
            .find_all(Locator::Css(css))
            .await
            .unwrap()
            .is_empty()
    }

    pub async fn click(&self, css: &str) {
        self.client
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    pub async fn js(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    pub async fn url(&self) -> String {
        self.client.current_url().await.unwrap().to_string()
    }

    /// Waits (bounded) for `script` to return true.
    pub async fn wait_js(&self, limit: Duration, script: &str) -> bool {
        let end = std::time::Instant::now() + limit;
        while std::time::Instant::now() < end {
            if self.js(script).await == Value::Bool(true) {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        false
    }

    /// Logs in on the login form with `token`; the browser is then where `next` led.
    pub async fn login(&self, base: &str, token: &str) {
        if !self.url().await.contains("/ui/login") {
            self.goto(&format!("{base}/ui/login")).await;
        }
        self.client
            .find(Locator::Css("#token"))
            .await
            .unwrap()
            .send_keys(token)
            .await
            .unwrap();
        self.click("#login").await;
        assert!(
            self.wait_js(
                Duration::from_secs(10),
                "return !location.pathname.startsWith('/ui/login')"
            )
            .await,
            "the login did not go through: {}",
            self.url().await
        );
    }

    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.unwrap();
        let path = screenshots().join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// Light or dark `prefers-color-scheme`, through the DevTools protocol of chromedriver.
    pub async fn color_scheme(&self, scheme: &str) {
        let session = self.client.session_id().await.unwrap().unwrap();
        let body = json!({
            "cmd": "Emulation.setEmulatedMedia",
            "params": { "features": [ { "name": "prefers-color-scheme", "value": scheme } ] }
        })
        .to_string();
        // curl, not a bare socket: chromedriver keeps connections open.
        let (head, answer) = crate::server_support::curl(&[
            "-X",
            "POST",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body,
            &format!("{}/session/{session}/goog/cdp/execute", self.driver_url),
        ]);
        assert!(
            head.starts_with("HTTP/1.1 200"),
            "{head}{}",
            String::from_utf8_lossy(&answer)
        );
        let want = format!("return matchMedia('(prefers-color-scheme: {scheme})').matches");
        assert_eq!(self.js(&want).await, Value::Bool(true));
    }

    /// axe-core's serious and critical violations on the page, in light and in dark mode, as
    /// readable lines (empty when there are none).
    pub async fn accessibility(&self) -> Vec<String> {
        let mut found = Vec::new();
        let loaded = self.js("return typeof axe !== 'undefined'").await;
        if loaded != Value::Bool(true) {
            self.client.execute(&axe_source(), vec![]).await.unwrap();
        }
        for scheme in ["light", "dark"] {
            self.color_scheme(scheme).await;
            let got = self
                .client
                .execute_async(
                    "const done = arguments[arguments.length - 1];
                     axe.run(document).then(r => done({ passes: r.passes.length, found: r.violations
                        .filter(v => v.impact === 'serious' || v.impact === 'critical')
                        .map(v => v.id + ' (' + v.impact + '): ' + v.help + ' at ' +
                             v.nodes.slice(0, 3).map(n => n.target.join(' ')).join(', ')) }))
                       .catch(e => done({ passes: 0, found: ['axe failed: ' + e] }));",
                    vec![],
                )
                .await
                .unwrap();
            // axe ran its rules: it says which passed (a page of gantry passes dozens).
            assert!(
                got["passes"].as_u64().unwrap_or(0) > 5,
                "axe did not run: {got}"
            );
            for v in got["found"].as_array().cloned().unwrap_or_default() {
                found.push(format!("{scheme}: {}", v.as_str().unwrap_or_default()));
            }
        }
        self.color_scheme("light").await;
        found
    }

    /// The session cookie the browser holds (WebDriver sees HttpOnly cookies).
    pub async fn session_cookie(&self) -> String {
        let c = self
            .client
            .get_named_cookie("gantry_session")
            .await
            .expect("a session cookie");
        assert_eq!(c.http_only(), Some(true));
        assert_eq!(format!("{:?}", c.same_site()), "Some(Strict)");
        c.value().to_string()
    }

    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        self.kill();
    }

    fn kill(&mut self) {
        let pgid = nix::unistd::Pid::from_raw(self.driver.id() as i32);
        let _ = nix::sys::signal::killpg(pgid, nix::sys::signal::Signal::SIGKILL);
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A multi-threaded runtime for one test's browser.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}
