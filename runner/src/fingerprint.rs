//! Stage fingerprints: what enters a stage's cache key, and why a stage is dirty.
//!
//! A stage's key is the blake3 hash of its [`Fingerprint`] serialised as JSON (maps in sorted
//! order, so the serialisation is canonical):
//!
//! | field | what | changes when |
//! |---|---|---|
//! | `cache_version` | [`CACHE_VERSION`], global | we change the runner's storage or hashing scheme |
//! | `kind` | stage kind name | the pipeline gives the stage another kind |
//! | `version` | the kind's implementation version ([`crate::Stage::version`]) | the stage's code changes behaviour |
//! | `params` | resolved params with defaults, sorted by key; only the keys the kind accepts (config sections contribute only those) | a param value changes, in the pipeline or in `config/` |
//! | `inputs.<name>[]` file | path relative to the project root + blake3 of the content | a file's bytes change, or a glob matches another set of files |
//! | `inputs.<name>[]` stage | upstream stage id, output name + blake3 of that output (tree hash for directories) | the upstream stage produced different content |
//! | `external` | state outside the inputs a kind declares (e.g. the `best` ref for `promote`) | that state moves |
//!
//! Not in the key: modification times, absolute paths, the stage id (renaming a stage keeps
//! its cache), output paths in the workspace, `--jobs`, and anything about the machine.
//!
//! Upstream stages enter through the content hashes of the outputs consumed rather than
//! their keys. That is a strict refinement of chaining keys: an upstream re-run that writes
//! byte-identical outputs (a reordered corrections export, a cosmetic param) leaves its
//! dependents fresh ("early cutoff", as in cargo's and Bazel's output-based freshness), while
//! any real change still propagates. When an upstream stage is itself stale, its dependents
//! are reported as `upstream X is stale` and their key is computed after it has run.
//!
//! A stage is fresh iff its key equals the key of its last *successful* execution and that
//! execution's outputs are intact in the store. The key is written only after success; a
//! stage that is re-running keeps its previous record (with its own, older key) until it
//! succeeds, so a killed or interrupted run leaves the stage stale for the real reason.
//!
//! A stage that re-runs sees its previous outputs (`StageContext::previous`) to work
//! incrementally — the ensemble's `train` reuses the embeddings its last model cached by text.
//! They never enter the key: a stage may only use them for work whose result does not depend
//! on having them (a cache), so the same key still means the same outputs.
//!
//! A pipeline may freeze stages (`[pipeline] frozen = [...]`, like DVC's frozen stages): a
//! frozen stage with an intact last result keeps it even when its inputs or upstream outputs
//! changed (a changed kind, implementation version or param still re-runs it), and its
//! dependents key on those kept outputs; `status` reports it `frozen` with the reasons it
//! would otherwise re-run, and `--force STAGE` still runs it. `finetune.toml` uses this so
//! new corrections never re-train the historical model.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

pub use artifacts::{DirtyReason, ObjectId, StageKey, param_text};

/// Bump to invalidate every cached stage result.
///
/// History:
/// - 1: initial scheme (kind, version, params, input content hashes, external state).
pub const CACHE_VERSION: u32 = 1;

/// One hashed input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InputHash {
    /// A workspace file.
    File {
        /// Path relative to the project root.
        path: String,
        /// blake3 of the content.
        blake3: ObjectId,
    },
    /// An upstream stage's output.
    Stage {
        /// Upstream stage id.
        stage: String,
        /// Output name.
        output: String,
        /// blake3 of the output object.
        blake3: ObjectId,
    },
}

impl InputHash {
    fn label(&self) -> String {
        match self {
            InputHash::File { path, .. } => path.clone(),
            InputHash::Stage { stage, output, .. } => format!("{stage}.{output}"),
        }
    }

    fn hash(&self) -> &str {
        match self {
            InputHash::File { blake3, .. } | InputHash::Stage { blake3, .. } => blake3,
        }
    }
}

/// Everything a stage's result depends on. See the module docs for the table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Fingerprint {
    /// [`CACHE_VERSION`] at the time.
    pub cache_version: u32,
    /// Stage kind.
    pub kind: String,
    /// Stage implementation version.
    pub version: String,
    /// Resolved params.
    pub params: BTreeMap<String, serde_json::Value>,
    /// Named inputs with their content hashes.
    pub inputs: BTreeMap<String, Vec<InputHash>>,
    /// External state the kind declares.
    #[serde(default)]
    pub external: serde_json::Value,
}

/// The upstream outputs a recorded stage execution read, from its fingerprint, so that
/// `gc` keeps the executions a kept artifact was made from. A fingerprint this build cannot
/// read names none.
pub fn upstream_reads(e: &artifacts::CacheEntry) -> Vec<artifacts::UpstreamRead> {
    let Ok(fp) = serde_json::from_value::<Fingerprint>(e.fingerprint.clone()) else {
        return Vec::new();
    };
    fp.inputs
        .into_values()
        .flatten()
        .filter_map(|h| match h {
            InputHash::Stage {
                stage,
                output,
                blake3,
            } => Some(artifacts::UpstreamRead {
                stage,
                output,
                object: blake3,
            }),
            InputHash::File { .. } => None,
        })
        .collect()
}

impl Fingerprint {
    /// The key: blake3 of the canonical JSON.
    pub fn key(&self) -> StageKey {
        let bytes = serde_json::to_vec(self).expect("fingerprints serialise");
        blake3::hash(&bytes).to_hex().to_string().into()
    }

    /// Explains how `self` (new) differs from `old`, one reason per difference.
    pub fn diff(&self, old: &Fingerprint) -> Vec<DirtyReason> {
        let mut out = Vec::new();
        if self.cache_version != old.cache_version {
            out.push(DirtyReason::CacheVersionChanged {
                old: old.cache_version,
                new: self.cache_version,
            });
        }
        if self.kind != old.kind {
            out.push(DirtyReason::KindChanged {
                old: old.kind.clone(),
                new: self.kind.clone(),
            });
        }
        if self.version != old.version {
            out.push(DirtyReason::VersionChanged {
                old: old.version.clone(),
                new: self.version.clone(),
            });
        }
        for (k, v) in &self.params {
            match old.params.get(k) {
                None => out.push(DirtyReason::ParamAdded {
                    name: k.clone(),
                    value: v.clone(),
                }),
                Some(o) if o != v => out.push(DirtyReason::ParamChanged {
                    name: k.clone(),
                    old: o.clone(),
                    new: v.clone(),
                }),
                _ => {}
            }
        }
        for (k, v) in &old.params {
            if !self.params.contains_key(k) {
                out.push(DirtyReason::ParamRemoved {
                    name: k.clone(),
                    old: v.clone(),
                });
            }
        }
        let empty = Vec::new();
        let names: std::collections::BTreeSet<&String> =
            self.inputs.keys().chain(old.inputs.keys()).collect();
        for name in names {
            let new = self.inputs.get(name).unwrap_or(&empty);
            let prev = old.inputs.get(name).unwrap_or(&empty);
            for n in new {
                match prev.iter().find(|p| p.label() == n.label()) {
                    None => out.push(DirtyReason::InputAdded {
                        input: name.clone(),
                        path: n.label(),
                    }),
                    Some(p) if p.hash() != n.hash() => out.push(match n {
                        InputHash::Stage { stage, output, .. } => DirtyReason::UpstreamChanged {
                            stage: stage.clone(),
                            output: output.clone(),
                            old: p.hash().to_string(),
                            new: n.hash().to_string(),
                        },
                        InputHash::File { path, .. } => DirtyReason::InputChanged {
                            input: name.clone(),
                            path: path.clone(),
                            old: p.hash().to_string(),
                            new: n.hash().to_string(),
                        },
                    }),
                    _ => {}
                }
            }
            for p in prev {
                if !new.iter().any(|n| n.label() == p.label()) {
                    out.push(DirtyReason::InputRemoved {
                        input: name.clone(),
                        path: p.label(),
                    });
                }
            }
        }
        if self.external != old.external {
            out.push(DirtyReason::ExternalChanged {
                old: old.external.clone(),
                new: self.external.clone(),
            });
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn fp() -> Fingerprint {
        Fingerprint {
            cache_version: CACHE_VERSION,
            kind: "split".into(),
            version: "1".into(),
            params: [("test_fraction".to_string(), json!(0.15))].into(),
            inputs: [(
                "records".to_string(),
                vec![InputHash::File {
                    path: "data/raw/historical_records.csv".into(),
                    blake3: "3fa1aaaa".into(),
                }],
            )]
            .into(),
            external: serde_json::Value::Null,
        }
    }

    #[test]
    fn key_is_stable_and_sensitive() {
        let a = fp();
        assert_eq!(a.key(), fp().key());
        let mut b = fp();
        b.params.insert("test_fraction".into(), json!(0.2));
        assert_ne!(a.key(), b.key());
    }

    #[test]
    fn params_print_as_written() {
        assert_eq!(param_text(&json!(0.1f32)), "0.1");
        assert_eq!(param_text(&json!(0.1f64)), "0.1");
        assert_eq!(param_text(&json!(1e-4f32)), "0.0001");
        assert_eq!(param_text(&json!(3)), "3");
        assert_eq!(param_text(&json!([2.0f32, 1.5f32])), "[2.0, 1.5]");
        assert_eq!(param_text(&json!("isotonic")), "isotonic");
    }

    #[test]
    fn diff_texts_carry_old_and_new_values() {
        let old = fp();
        let mut new = fp();
        new.params.insert("test_fraction".into(), json!(0.2));
        new.version = "2".into();
        new.inputs.get_mut("records").unwrap()[0] = InputHash::File {
            path: "data/raw/historical_records.csv".into(),
            blake3: "9c02bbbb".into(),
        };
        let texts: Vec<String> = new.diff(&old).iter().map(|r| r.to_string()).collect();
        assert_eq!(
            texts,
            vec![
                "stage version changed 1 -> 2",
                "param test_fraction changed 0.15 -> 0.2",
                "input data/raw/historical_records.csv changed (blake3 3fa1… -> 9c02…)",
            ]
        );
    }

    #[test]
    fn reasons_serialise_tagged() {
        let r = DirtyReason::ParamChanged {
            name: "learning_rate".into(),
            old: json!(2e-5),
            new: json!(3e-5),
        };
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"reason":"param_changed","name":"learning_rate","old":0.00002,"new":0.00003}"#
        );
        assert_eq!(r.to_string(), "param learning_rate changed 2e-5 -> 3e-5");
    }
}
