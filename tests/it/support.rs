//! A temporary project with the repo's pipelines and config and generated demo data.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

pub struct Project {
    pub dir: tempfile::TempDir,
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_isco-dag")
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

impl Project {
    /// A project with `rows` demo records and the repo's pipelines and config.
    pub fn new(rows: usize) -> Project {
        let dir = tempfile::tempdir().unwrap();
        for sub in ["pipelines", "config"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
            for e in std::fs::read_dir(repo().join(sub)).unwrap() {
                let e = e.unwrap();
                std::fs::copy(e.path(), dir.path().join(sub).join(e.file_name())).unwrap();
            }
        }
        // Small hash table and few epochs: the tests check behaviour, not accuracy.
        let cfg = dir.path().join("config/default.toml");
        let text = std::fs::read_to_string(&cfg).unwrap();
        let text = text
            .replace("buckets = 1048576", "buckets = 16384")
            .replace("buckets = 262144", "buckets = 16384");
        std::fs::write(&cfg, text).unwrap();
        let p = Project { dir };
        p.ok(&["demo", "--dir", "data", "--rows", &rows.to_string()]);
        p
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .current_dir(self.dir.path())
            .env_remove("RUST_LOG");
        c
    }

    pub fn run(&self, args: &[&str]) -> Output {
        self.cmd(args).output().unwrap()
    }

    /// Runs and asserts success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        succeeded(self.run(args), args)
    }

    /// Runs and asserts failure; returns (exit code, stderr).
    pub fn fails(&self, args: &[&str]) -> (i32, String) {
        let out = self.run(args);
        assert!(
            !out.status.success(),
            "isco-dag {args:?} unexpectedly succeeded"
        );
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    pub fn json(&self, rel: &str) -> Value {
        serde_json::from_str(&std::fs::read_to_string(self.path(rel)).unwrap()).unwrap()
    }

    pub fn last_run(&self) -> Value {
        serde_json::from_str(&self.ok(&["runs", "show", "last", "--format", "json"])).unwrap()
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    pub fn edit(&self, rel: &str, from: &str, to: &str) {
        let p = self.path(rel);
        let s = std::fs::read_to_string(&p).unwrap();
        assert!(s.contains(from), "{rel} does not contain {from:?}");
        std::fs::write(&p, s.replacen(from, to, 1)).unwrap();
    }

    pub fn append(&self, rel: &str, text: &str) {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(self.path(rel))
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }
}

/// `{stage id: outcome}` of a run record.
pub fn outcomes(run: &Value) -> Vec<(String, String)> {
    run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["id"].as_str().unwrap().to_string(),
                s["outcome"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

/// A stage's entry in a run record.
pub fn stage_of<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["stages"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("stage {id} not in run {run}"))
}

pub fn outcome_of(run: &Value, id: &str) -> String {
    outcomes(run)
        .into_iter()
        .find(|(s, _)| s == id)
        .map(|(_, o)| o)
        .unwrap_or_else(|| panic!("stage {id} not in run {run}"))
}

#[allow(dead_code)]
pub fn exists(p: &Path) -> bool {
    p.exists()
}

/// Asserts that a command succeeded (showing its output otherwise); returns its stdout.
pub fn succeeded(out: Output, args: &[&str]) -> String {
    assert!(
        out.status.success(),
        "isco-dag {args:?} failed:\nstdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// One column of a CSV file with a header row, one value per row.
pub fn csv_column(path: &Path, name: &str) -> Vec<String> {
    let mut r = csv::Reader::from_path(path).unwrap();
    let col = r
        .headers()
        .unwrap()
        .iter()
        .position(|h| h == name)
        .unwrap_or_else(|| panic!("{} has no {name} column", path.display()));
    r.records()
        .map(|row| row.unwrap()[col].to_string())
        .collect()
}
