//! Store robustness: kill -9 mid-stage, concurrent runs, verify and gc.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use crate::support::{Project, outcome_of};

const P: &str = "pipelines/full.toml";

#[test]
fn kill_during_a_stage_then_rerun_and_verify() {
    // Enough rows that `clean` runs for a while.
    let p = Project::new(150_000);
    let mut child = p
        .cmd(&["run", P])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    loop {
        let l = lines.next().expect("the run printed nothing").unwrap();
        if l.starts_with("running   clean") {
            break;
        }
    }
    // The stage's staging directory in the store's tmp/, named with the run's process id.
    let pid = format!(".tmp-{}-", child.id());
    let staged = || -> Vec<String> {
        std::fs::read_dir(p.path("artifacts/store/tmp"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
            .filter(|n| n.contains(&pid))
            .collect()
    };
    let t = std::time::Instant::now();
    while staged().is_empty() && t.elapsed().as_secs() < 30 {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(!staged().is_empty(), "clean stages its outputs in tmp/");
    // SIGKILL: no destructor, no unlock, no cleanup.
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!staged().is_empty(), "a killed run leaves its staging");
    let run = p.last_run();
    assert_eq!(
        run["status"], "abandoned",
        "a run left `running` by a killed process shows as abandoned once the lock is free"
    );
    let st = p.ok(&["status", P]);
    assert!(st.contains("[DIRTY] clean: never run"), "{st}");
    p.ok(&["run", P]);
    let run = p.last_run();
    assert_eq!(outcome_of(&run, "clean"), "executed");
    assert_eq!(outcome_of(&run, "split"), "executed");
    // The next run cleared what the killed one staged.
    assert_eq!(staged(), Vec::<String>::new());
    let v = p.ok(&["verify"]);
    assert!(v.contains("0 corrupt, 0 missing"), "{v}");
}

#[test]
fn concurrent_runs_do_not_corrupt_the_store() {
    let p = Project::new(20_000);
    let a = p
        .cmd(&["run", P, "--force"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let b = p
        .cmd(&["run", P, "--force"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (oa, ob) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(oa.status.success() && ob.status.success());
    let runs: serde_json::Value =
        serde_json::from_str(&p.ok(&["runs", "list", "--format", "json"])).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 2);
    assert!(
        runs.as_array()
            .unwrap()
            .iter()
            .all(|r| r["status"] == "succeeded")
    );
    assert!(p.ok(&["verify"]).contains("0 corrupt, 0 missing"));
    // Both waited for each other rather than interleaving: the next run is a no-op.
    p.ok(&["run", P]);
    assert_eq!(outcome_of(&p.last_run(), "split"), "skipped");
    // --no-wait fails clearly while another process holds the lock.
    let store = artifacts::Store::open(p.path("artifacts/store")).unwrap();
    let _held = store.lock(false, &|_| {}).unwrap();
    let out = p.run(&["run", P, "--no-wait"]);
    let (err, said) = (
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout),
    );
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("is locked by another isco-dag process"),
        "{err}"
    );
    // Nothing ran, so there is no count of stages to print.
    assert!(!said.contains("executed"), "{said}");
}

#[test]
fn verify_detects_corruption_and_gc_keeps_what_is_needed() {
    let p = Project::new(300);
    p.ok(&["run", P]);
    // Two more models trained on other splits, neither promoted: `best` stays the first.
    p.edit("config/default.toml", "seed = 42", "seed = 43");
    p.ok(&["run", P, "-S", "promote.min_improvement=0.5"]);
    p.edit("config/default.toml", "seed = 43", "seed = 44");
    p.ok(&["run", P, "-S", "promote.min_improvement=0.5"]);
    // A dry run names what gc would remove, and removes nothing.
    let objects = || {
        std::fs::read_dir(p.path("artifacts/store/objects"))
            .unwrap()
            .map(|d| std::fs::read_dir(d.unwrap().path()).unwrap().count())
            .sum::<usize>()
    };
    let before = objects();
    let out = p.ok(&["gc", "--keep-runs", "1", "--dry-run"]);
    assert!(out.contains("would remove 2 runs"), "{out}");
    assert!(
        !out.contains(" 0 objects"),
        "the old split's objects: {out}"
    );
    assert_eq!(objects(), before);
    let dry = out;
    let out = p.ok(&["gc", "--keep-runs", "1"]);
    assert!(out.contains("removed 2 runs"), "{out}");
    assert_eq!(
        out.trim().strip_prefix("removed "),
        dry.split("; nothing")
            .next()
            .unwrap()
            .strip_prefix("would remove "),
        "the dry run counts exactly what gc removes"
    );
    assert!(objects() < before);
    // The promoted model keeps its lineage although the run that trained it was collected:
    // it names the split it was trained on, not the latest run's.
    let lineage: serde_json::Value = serde_json::from_str(&p.ok(&[
        "lineage",
        "models/best",
        "--pipeline",
        P,
        "--format",
        "json",
    ]))
    .unwrap();
    fn split_seed(l: &serde_json::Value) -> Option<i64> {
        if l["stage"] == "split" {
            return l["params"]["seed"].as_i64();
        }
        l["upstream"].as_array()?.iter().find_map(split_seed)
    }
    assert_eq!(split_seed(&lineage), Some(42), "{lineage:#}");
    // The current state survives gc: a re-run is a no-op.
    p.ok(&["run", P, "-S", "promote.min_improvement=0.5"]);
    assert_eq!(outcome_of(&p.last_run(), "split"), "skipped");
    // The split with seed 43 made nothing that is kept: it was collected, and going back
    // executes it again.
    p.edit("config/default.toml", "seed = 44", "seed = 43");
    p.ok(&["run", P, "-S", "promote.min_improvement=0.5"]);
    assert_eq!(outcome_of(&p.last_run(), "split"), "executed");
    // The split the promoted model was trained on was kept with it.
    p.edit("config/default.toml", "seed = 43", "seed = 42");
    p.ok(&["run", P, "-S", "promote.min_improvement=0.5"]);
    assert_eq!(outcome_of(&p.last_run(), "split"), "restored");
    // Corrupt the promoted model's tree manifest, an object `verify` also reads to list the
    // model's files.
    let best: serde_json::Value = p.json("artifacts/store/refs/best.json");
    let id = best["target"]["id"].as_str().unwrap();
    let obj = p.path(&format!(
        "artifacts/store/objects/{}/{}",
        &id[..2],
        &id[2..]
    ));
    let mut perm = std::fs::metadata(&obj).unwrap().permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perm.set_readonly(false);
    std::fs::set_permissions(&obj, perm).unwrap();
    std::fs::write(&obj, b"garbage").unwrap();
    let (code, _) = p.fails(&["verify"]);
    assert_eq!(code, 1);
    // Without --repair, verify changes nothing: the second look finds the same damage.
    let out = String::from_utf8(p.run(&["verify"]).stdout).unwrap();
    assert!(out.contains(&format!("CORRUPT object {id}")), "{out}");
    assert!(!out.contains("MISSING"), "{out}");
    assert!(obj.is_file());
}
