//! `[serve]`, `[inference]` and `[data]`'s column names from the project config file, read
//! strictly.

use std::path::{Path, PathBuf};

use classifier::predict::InferenceConfig;
use classifier::text::RecordColumns;
use serde::Deserialize;

use crate::error::Error;

/// Settings of `isco-dag serve` (config section `[serve]`; every key optional).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServeConfig {
    /// Address to listen on (`127.0.0.1:0` picks a free port; the bound address is printed).
    pub addr: String,
    /// Artifact store holding the promoted model.
    pub store: PathBuf,
    /// Ref of the model to serve.
    pub model_ref: String,
    /// ISCO-08 reference CSV for the review page's code search and code validation.
    pub reference: Option<PathBuf>,
    /// Most records in one `/predict/batch` or `/predict/csv` request.
    pub batch_limit: usize,
    /// Largest JSON body in bytes.
    pub json_max_bytes: usize,
    /// Largest `/predict/csv` upload (CSV or Parquet) in bytes.
    pub csv_max_bytes: usize,
    /// Where review queues are read from (the `predict` stage's `to_review_<date>.csv`) and
    /// where API predictions that need review are appended (`api_review_<date>.csv`).
    pub review_dir: PathBuf,
    /// Where reviewers' decisions are appended (`review_<date>.csv`), for `finetune.toml`.
    pub corrections_dir: PathBuf,
    /// Token the write endpoints require (`Authorization: Bearer …`). Empty: taken from the
    /// environment variable `ISCO_DAG_API_TOKEN`; with neither, writes are refused.
    pub api_token: String,
    /// Seconds between checks of the model ref (a promoted model is swapped in live).
    pub reload_seconds: f64,
    /// Longest job title or duties text, in characters, that one record may have; longer
    /// ones are refused (422 naming the field) before any work is done.
    pub max_field_chars: usize,
    /// Whether API predictions that need review are appended to the review queue
    /// (`api_review_<date>.csv`). Off by default: anyone who can reach the service could
    /// otherwise fill the reviewers' queue.
    pub api_review_queue: bool,
    /// Largest size of one day's API review queue file in bytes; predictions past it are
    /// not queued (with a warning in the log).
    pub api_review_max_bytes: u64,
    /// Seconds a client has to send a request's headers; slower connections are closed.
    pub header_timeout_seconds: f64,
    /// Seconds a client has to send a request's body once its headers arrived.
    pub body_timeout_seconds: f64,
    /// Connections served at once; further clients wait in the listen queue until one ends.
    /// Capped at run time below the process's file-descriptor limit.
    pub max_connections: usize,
    /// Web origins (`https://coding.example.org`) whose pages may call the API from a
    /// browser (CORS). Empty: none, the browser's same-origin rule applies.
    pub cors_origins: Vec<String>,
}

impl Default for ServeConfig {
    fn default() -> Self {
        ServeConfig {
            addr: "127.0.0.1:8000".into(),
            store: PathBuf::from(artifacts::DEFAULT_STORE_DIR),
            model_ref: "best".into(),
            reference: None,
            batch_limit: 10_000,
            json_max_bytes: 16 << 20,
            csv_max_bytes: 32 << 20,
            review_dir: PathBuf::from("data/review"),
            corrections_dir: PathBuf::from("data/corrections"),
            api_token: String::new(),
            reload_seconds: 2.0,
            max_field_chars: 20_000,
            api_review_queue: false,
            api_review_max_bytes: 64 << 20,
            header_timeout_seconds: 10.0,
            body_timeout_seconds: 30.0,
            max_connections: 512,
            cors_origins: Vec::new(),
        }
    }
}

impl ServeConfig {
    /// Refuses limits that would disable the service's own protections.
    pub fn validate(&self) -> Result<(), String> {
        for (key, v) in [
            ("header_timeout_seconds", self.header_timeout_seconds),
            ("body_timeout_seconds", self.body_timeout_seconds),
            ("reload_seconds", self.reload_seconds),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(format!("`{key}` is {v}; give a positive number of seconds"));
            }
        }
        for (key, v) in [
            ("max_field_chars", self.max_field_chars),
            ("max_connections", self.max_connections),
            ("batch_limit", self.batch_limit),
            ("json_max_bytes", self.json_max_bytes),
            ("csv_max_bytes", self.csv_max_bytes),
        ] {
            if v == 0 {
                return Err(format!("`{key}` is 0; give a positive limit"));
            }
        }
        for o in &self.cors_origins {
            let ok = o.split_once("://").is_some_and(|(scheme, host)| {
                matches!(scheme, "http" | "https")
                    && !host.is_empty()
                    && !host.contains(['/', ' ', '*'])
            }) && axum::http::HeaderValue::from_str(o).is_ok();
            if !ok {
                return Err(format!(
                    "`cors_origins` entry `{o}` is not an origin; write scheme, host and port only, like `https://coding.example.org`"
                ));
            }
        }
        Ok(())
    }
}

/// Everything the service is configured with.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// `[serve]`.
    pub serve: ServeConfig,
    /// `[inference]`: thresholds, grades, top-k, cache.
    pub inference: InferenceConfig,
    /// `[data]`'s `title_column` and `duties_column`: where an uploaded file holds the
    /// records' text (the section's other keys are for training).
    pub columns: RecordColumns,
}

impl Settings {
    /// Reads `[serve]`, `[inference]` and `[data]`'s column names of a config file (defaults when the file or a
    /// section is absent). Unknown keys are errors naming the file and key.
    pub fn load(path: &Path) -> Result<Settings, Error> {
        if !path.is_file() {
            return Ok(Settings::default());
        }
        let bad = |message: String| Error::Config {
            path: path.to_path_buf(),
            message,
        };
        let text = std::fs::read_to_string(path).map_err(|e| bad(e.to_string()))?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| bad(e.to_string()))?;
        let section = |name: &str| table.get(name).cloned();
        let serve = match section("serve") {
            Some(v) => v
                .try_into()
                .map_err(|e: toml::de::Error| bad(format!("section [serve]: {}", e.message())))?,
            None => ServeConfig::default(),
        };
        let inference = match section("inference") {
            Some(v) => v.try_into().map_err(|e: toml::de::Error| {
                bad(format!("section [inference]: {}", e.message()))
            })?,
            None => InferenceConfig::default(),
        };
        inference
            .validate()
            .map_err(|m| bad(format!("section [inference]: {m}")))?;
        serve
            .validate()
            .map_err(|m| bad(format!("section [serve]: {m}")))?;
        let columns: RecordColumns = match section("data") {
            Some(toml::Value::Table(t)) => toml::Value::Table(
                t.into_iter()
                    .filter(|(k, _)| RecordColumns::KEYS.contains(&k.as_str()))
                    .collect(),
            )
            .try_into()
            .map_err(|e: toml::de::Error| bad(format!("section [data]: {}", e.message())))?,
            Some(_) => return Err(bad("`data` must be a section ([data]), not a value".into())),
            None => RecordColumns::default(),
        };
        columns
            .validate()
            .map_err(|m| bad(format!("section [data]: {m}")))?;
        Ok(Settings {
            serve,
            inference,
            columns,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_serve_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.toml");
        std::fs::write(&p, "[serve]\naddr = \"127.0.0.1:9\"\nbatch_limt = 5\n").unwrap();
        let e = Settings::load(&p).unwrap_err().to_string();
        assert!(e.contains("c.toml") && e.contains("batch_limt"), "{e}");
        std::fs::write(&p, "[serve]\nbatch_limit = 5\n[inference]\ntop_k = 2\n").unwrap();
        let s = Settings::load(&p).unwrap();
        assert_eq!((s.serve.batch_limit, s.inference.top_k), (5, 2));
        assert_eq!(s.columns, RecordColumns::default());
        // Of [data], the column names are read (strictly); the training keys are not the
        // service's.
        std::fs::write(&p, "[data]\ntitle_column = \"Job\"\nseed = 3\n").unwrap();
        assert_eq!(Settings::load(&p).unwrap().columns.title_column, "Job");
        std::fs::write(&p, "[data]\nduties_column = 5\n").unwrap();
        let e = Settings::load(&p).unwrap_err().to_string();
        assert!(e.contains("c.toml") && e.contains("section [data]"), "{e}");
        std::fs::write(&p, "[data]\nduties_column = \"job_title\"\n").unwrap();
        let e = Settings::load(&p).unwrap_err().to_string();
        assert!(e.contains("the same as `title_column`"), "{e}");
    }
}
