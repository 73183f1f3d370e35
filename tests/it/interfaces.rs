//! What a user meets around a run: Ctrl-C, the JSON log.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::support::{Project, outcome_of};

const P: &str = "pipelines/full.toml";

/// Starts `run` and returns once `train` is running (a long training, so it still is).
fn run_until_train(p: &Project) -> std::process::Child {
    p.edit("config/default.toml", "epochs = 8", "epochs = 100000");
    p.edit(
        "config/default.toml",
        "early_stopping_patience = 2",
        "early_stopping_patience = 100000",
    );
    let mut child = p
        .cmd(&["run", P])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let l = lines.next().expect("the run printed nothing").unwrap();
        if l.starts_with("running   train") {
            break;
        }
    }
    std::thread::sleep(std::time::Duration::from_millis(300));
    child
}

#[test]
fn ctrl_c_records_the_run_as_interrupted_and_keeps_what_finished() {
    let p = Project::new(600);
    let child = run_until_train(&p);
    let pid = child.id().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-INT", &pid])
        .status()
        .unwrap();
    assert!(sent.success());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(130));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("recorded as interrupted") && err.contains("(clean, corrections"),
        "{err}"
    );
    let run = p.last_run();
    assert_eq!(run["status"], "interrupted", "{run}");
    assert_eq!(outcome_of(&run, "split"), "executed");
    let list = p.ok(&["runs", "list"]);
    assert!(list.contains("interrupted"), "{list}");
    // The finished stages stay fresh; train says why it is stale, not "never run".
    let st: serde_json::Value =
        serde_json::from_str(&p.ok(&["status", P, "--format", "json"])).unwrap();
    let state = |id: &str| {
        st.as_array()
            .unwrap()
            .iter()
            .find(|s| s["id"] == id)
            .unwrap()
            .clone()
    };
    for id in ["clean", "corrections", "cluster-outliers", "split"] {
        assert_eq!(state(id)["state"], "fresh", "{st}");
    }
    assert_eq!(state("train")["state"], "stale");
    assert_eq!(state("train")["reasons"][0]["reason"], "never_run", "{st}");
    // The next run goes on without recovering a "dead" lock.
    p.edit("config/default.toml", "epochs = 100000", "epochs = 8");
    p.edit(
        "config/default.toml",
        "early_stopping_patience = 100000",
        "early_stopping_patience = 2",
    );
    let out = p.run(&["run", P]);
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stderr).contains("recovered the store lock"));
    assert_eq!(outcome_of(&p.last_run(), "split"), "skipped");
}

#[test]
fn the_json_log_alone_tells_what_a_run_did() {
    let p = Project::new(300);
    for expected in ["executed", "skipped"] {
        let out = p.run(&["run", P, "--log-format", "json"]);
        assert!(out.status.success());
        let events: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect();
        let of = |name: &str| -> Vec<&serde_json::Value> {
            events
                .iter()
                .filter(|e| e["fields"]["event"] == name)
                .collect()
        };
        assert_eq!(of("run_started").len(), 1);
        assert_eq!(of("run_finished").len(), 1);
        assert_eq!(of("run_finished")[0]["fields"]["status"], "succeeded");
        let finished = of("stage_finished");
        assert_eq!(finished.len(), 8, "{events:?}");
        for e in finished {
            let f = &e["fields"];
            assert_eq!(f["outcome"], expected, "{e}");
            assert!(f["duration_s"].is_number() && f["key"].as_str().unwrap().len() == 64);
        }
        if expected == "executed" {
            assert_eq!(of("stage_started").len(), 8);
            let train = of("stage_finished")
                .into_iter()
                .find(|e| e["fields"]["stage"] == "train")
                .unwrap();
            let metrics: serde_json::Value =
                serde_json::from_str(train["fields"]["metrics"].as_str().unwrap()).unwrap();
            assert!(metrics.is_object() && !metrics.as_object().unwrap().is_empty());
        }
    }
}
