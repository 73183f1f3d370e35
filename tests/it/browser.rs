//! The review page and the evaluation report in headless Chromium, driven over WebDriver with
//! fantoccini (Debian's `chromium` and `chromium-driver`; `.ci/run` installs them): load
//! `/review`, search a code, pick it, submit, and check that the corrections file gained the
//! row; load the report at laptop width and check that every chart shows once, unclipped.
//!
//! Without chromedriver the test says so and passes, unless `ISCO_DAG_REQUIRE_BROWSER=1`
//! (set by `.ci/run`), where a missing browser is a failure.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

use crate::api::{TOKEN, review_file, reviewing_project, start};
use crate::http::post_json;

/// A headless Chromium session through chromedriver, driven with `fantoccini` on a tokio
/// runtime of its own; the methods wait for what they need and fail the test with the
/// WebDriver error.
struct Driver {
    child: Child,
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    _profile: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            let _ = self.rt.block_on(c.close());
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start() -> Option<Driver> {
        let driver = ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists());
        let Some(driver) = driver else {
            assert!(
                std::env::var("ISCO_DAG_REQUIRE_BROWSER").is_err(),
                "chromedriver is not installed; apt-get install chromium chromium-driver"
            );
            eprintln!("browser test skipped: install chromium and chromium-driver to run it");
            return None;
        };
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(driver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}");
        let t = Instant::now();
        while std::net::TcpStream::connect(&addr).is_err() {
            assert!(
                t.elapsed() < Duration::from_secs(20),
                "chromedriver did not start"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        let profile = tempfile::tempdir().unwrap();
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                         "--disable-background-networking", "--disable-component-update", "--disable-sync",
                         "--disable-dev-shm-usage", format!("--user-data-dir={}", profile.path().display())]
            }
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let client = rt
            .block_on(
                ClientBuilder::new(HttpConnector::new())
                    .capabilities(caps)
                    .connect(&format!("http://{addr}")),
            )
            .unwrap_or_else(|e| panic!("no WebDriver session: {e}"));
        Some(Driver {
            child,
            rt,
            client: Some(client),
            _profile: profile,
        })
    }

    fn client(&self) -> &Client {
        self.client.as_ref().expect("session open")
    }

    fn goto(&self, url: &str) {
        self.rt
            .block_on(self.client().goto(url))
            .unwrap_or_else(|e| panic!("goto {url}: {e}"));
    }

    /// Waits up to 10 s for a CSS selector.
    fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.rt
            .block_on(
                self.client()
                    .wait()
                    .at_most(Duration::from_secs(10))
                    .for_element(Locator::Css(css)),
            )
            .unwrap_or_else(|e| panic!("no element `{css}` on the page: {e}"))
    }

    fn click(&self, css: &str) {
        let e = self.find(css);
        self.rt
            .block_on(e.click())
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css);
        self.rt
            .block_on(e.send_keys(text))
            .unwrap_or_else(|e| panic!("type into {css}: {e}"));
    }

    /// Runs a script in the page and returns its value.
    fn execute(&self, script: &str) -> Value {
        self.rt
            .block_on(self.client().execute(script, vec![]))
            .unwrap_or_else(|e| panic!("script failed: {e}"))
    }

    /// Sets the window's outer size.
    fn window(&self, width: u32, height: u32) {
        self.rt
            .block_on(self.client().set_window_size(width, height))
            .unwrap_or_else(|e| panic!("window size: {e}"));
    }

    /// A PNG screenshot of the viewport.
    fn screenshot(&self) -> Vec<u8> {
        self.rt
            .block_on(self.client().screenshot())
            .unwrap_or_else(|e| panic!("screenshot: {e}"))
    }

    fn text(&self, css: &str) -> String {
        let e = self.find(css);
        self.rt
            .block_on(e.text())
            .unwrap_or_else(|e| panic!("text of {css}: {e}"))
    }
}

#[test]
fn a_coder_reviews_a_job_in_the_browser() {
    let p = reviewing_project();
    let s = start(&p, &[]);
    let r = post_json(
        &s.addr,
        "/predict/job",
        r#"{"job_title":"head chef","duties_description":"planning menus"}"#,
    );
    assert!(r.json()["needs_review"].as_bool().unwrap(), "{}", r.text());
    let Some(d) = Driver::start() else { return };

    d.goto(&format!("http://{}/review", s.addr));
    d.find("body[data-loaded]");
    assert!(d.text("section.item h2").contains("head chef"));
    // Three suggestions with titles and the highlighted words are shown.
    d.find("section.item .suggest[data-code]");
    d.find("section.item .words span");
    d.type_into("#coder", "ana");
    d.type_into("#token", TOKEN);
    // No unit group's title says "chef": the model finds the code the coder means.
    d.type_into("section.item .search", "chef");
    d.click("section.item .pick[data-code='5120'][data-matched='model']");
    d.click("section.item .submit");
    d.find("section.item[data-done] .status.ok");

    let text = review_file(&p);
    let rows: Vec<&str> = text.lines().collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(
        rows[1].starts_with("head chef,planning menus,5120,ana,"),
        "{text}"
    );
}

#[test]
fn the_evaluation_report_reads_at_laptop_width() {
    let p = crate::support::Project::new(600);
    p.ok(&["run", "pipelines/full.toml"]);
    let Some(d) = Driver::start() else { return };
    d.window(1280, 800);
    let report = p.path("models/latest_report/report.html");
    d.goto(&format!("file://{}", report.display()));
    d.find("img[src$='_reliability.svg']");
    // Every chart loaded, once, and fits the page: nothing is clipped or needs a sideways
    // scroll at laptop width.
    let v = d.execute(
        "const imgs = [...document.images];
         return {
           loaded: imgs.every(i => i.complete && i.naturalWidth > 0),
           srcs: imgs.map(i => i.getAttribute('src')),
           widest: Math.max(...imgs.map(i => i.getBoundingClientRect().right)),
           view: document.documentElement.clientWidth,
           scroll: document.documentElement.scrollWidth,
         };",
    );
    assert_eq!(v["loaded"], true, "{v}");
    let srcs: Vec<&str> = v["srcs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let mut unique = srcs.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), srcs.len(), "a chart appears twice: {srcs:?}");
    assert!(
        srcs.iter()
            .any(|s| s.ends_with("test_confusion_2digit.svg"))
    );
    assert!(
        v["scroll"].as_f64().unwrap() <= v["view"].as_f64().unwrap(),
        "the report scrolls sideways at 1280 px: {v}"
    );
    assert!(
        v["widest"].as_f64().unwrap() <= v["view"].as_f64().unwrap(),
        "a chart is clipped: {v}"
    );
    let shot = d.screenshot();
    assert!(
        shot.starts_with(b"\x89PNG") && shot.len() > 10_000,
        "no screenshot"
    );
    if let Ok(dir) = std::env::var("ISCO_DAG_SCREENSHOTS") {
        std::fs::write(format!("{dir}/report.png"), shot).unwrap();
    }
}
