//! Why a stage runs: the reasons a run record, `status` and the logs give, as objects with
//! the old and new values (`{"reason": "param_changed", "name": …, "old": …, "new": …}`).

use std::fmt;

use serde::{Deserialize, Serialize};

/// Why a stage must run (or was restored). Carries old and new values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reason", rename_all = "snake_case")]
pub enum DirtyReason {
    /// No successful execution is recorded.
    NeverRun,
    /// `--force` named it.
    Forced,
    /// The global cache version moved.
    CacheVersionChanged {
        /// Old.
        old: u32,
        /// New.
        new: u32,
    },
    /// The stage's kind changed.
    KindChanged {
        /// Old.
        old: String,
        /// New.
        new: String,
    },
    /// The implementation version changed.
    VersionChanged {
        /// Old.
        old: String,
        /// New.
        new: String,
    },
    /// A param value changed.
    ParamChanged {
        /// Param.
        name: String,
        /// Old value.
        old: serde_json::Value,
        /// New value.
        new: serde_json::Value,
    },
    /// A param appeared.
    ParamAdded {
        /// Param.
        name: String,
        /// Its value.
        value: serde_json::Value,
    },
    /// A param disappeared.
    ParamRemoved {
        /// Param.
        name: String,
        /// Its old value.
        old: serde_json::Value,
    },
    /// An input file's content changed.
    InputChanged {
        /// Input name.
        input: String,
        /// File path.
        path: String,
        /// Old hash.
        old: String,
        /// New hash.
        new: String,
    },
    /// A file joined an input (glob or list).
    InputAdded {
        /// Input name.
        input: String,
        /// File path or `stage.output`.
        path: String,
    },
    /// A file left an input.
    InputRemoved {
        /// Input name.
        input: String,
        /// File path or `stage.output`.
        path: String,
    },
    /// An upstream output's content changed.
    UpstreamChanged {
        /// Upstream stage.
        stage: String,
        /// Its output.
        output: String,
        /// Old hash.
        old: String,
        /// New hash.
        new: String,
    },
    /// An upstream stage is stale and will run first.
    UpstreamStale {
        /// Upstream stage.
        stage: String,
    },
    /// External state (such as a ref) changed.
    ExternalChanged {
        /// Old.
        old: serde_json::Value,
        /// New.
        new: serde_json::Value,
    },
    /// A recorded output is missing or damaged in the store.
    OutputMissing {
        /// Output name.
        output: String,
    },
    /// The previous fingerprint could not be read, so no comparison is possible.
    FingerprintUnreadable,
    /// Upstream stages failed or were blocked, so the stage could not run.
    UpstreamFailed {
        /// Those stages.
        stages: Vec<String>,
    },
    /// A frozen stage kept its last results although this would otherwise re-run it.
    Frozen {
        /// What changed.
        otherwise: Box<DirtyReason>,
    },
    /// A reason as text, from a run record written before reasons were recorded as objects.
    #[serde(untagged)]
    Recorded(String),
}

fn short(h: &str) -> String {
    format!("{}…", &h[..h.len().min(4)])
}

fn val(v: &serde_json::Value) -> String {
    param_text(v)
}

/// A param value as it was written: strings bare, and numbers that came from a 32-bit float
/// (most learning rates) in their shortest form — `0.1`, not the `0.10000000149011612` that
/// the widened value would print.
pub fn param_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Number(n) if n.is_f64() => {
            let x = n.as_f64().unwrap_or_default();
            let narrow = x as f32;
            if f64::from(narrow) == x {
                format!("{narrow:?}")
            } else {
                format!("{x:?}")
            }
        }
        serde_json::Value::Array(a) => format!(
            "[{}]",
            a.iter().map(param_text).collect::<Vec<_>>().join(", ")
        ),
        other => other.to_string(),
    }
}

impl fmt::Display for DirtyReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use DirtyReason::*;
        match self {
            NeverRun => write!(f, "never run"),
            Forced => write!(f, "forced"),
            CacheVersionChanged { old, new } => write!(f, "cache version changed {old} -> {new}"),
            KindChanged { old, new } => write!(f, "kind changed {old} -> {new}"),
            VersionChanged { old, new } => write!(f, "stage version changed {old} -> {new}"),
            ParamChanged { name, old, new } => {
                write!(f, "param {name} changed {} -> {}", val(old), val(new))
            }
            ParamAdded { name, value } => write!(f, "param {name} added ({})", val(value)),
            ParamRemoved { name, old } => write!(f, "param {name} removed (was {})", val(old)),
            InputChanged { path, old, new, .. } => write!(
                f,
                "input {path} changed (blake3 {} -> {})",
                short(old),
                short(new)
            ),
            InputAdded { input, path } => write!(f, "input {input}: {path} added"),
            InputRemoved { input, path } => write!(f, "input {input}: {path} removed"),
            UpstreamChanged {
                stage,
                output,
                old,
                new,
            } => write!(
                f,
                "upstream {stage} changed ({stage}.{output} blake3 {} -> {})",
                short(old),
                short(new)
            ),
            UpstreamStale { stage } => write!(f, "upstream {stage} is stale"),
            ExternalChanged { old, new } => {
                write!(f, "external state changed {} -> {}", val(old), val(new))
            }
            OutputMissing { output } => write!(f, "output {output} missing from the store"),
            FingerprintUnreadable => write!(f, "previous fingerprint unreadable"),
            UpstreamFailed { stages } => {
                write!(f, "upstream {} failed or was blocked", stages.join(", "))
            }
            Frozen { otherwise } => write!(f, "frozen; otherwise: {otherwise}"),
            Recorded(text) => f.write_str(text),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_round_trip_and_old_text_reasons_still_read() {
        let r = DirtyReason::Frozen {
            otherwise: Box::new(DirtyReason::UpstreamStale {
                stage: "split".into(),
            }),
        };
        let v = serde_json::to_value(&r).unwrap();
        assert_eq!(v["reason"], "frozen");
        assert_eq!(serde_json::from_value::<DirtyReason>(v).unwrap(), r);
        let old: DirtyReason = serde_json::from_str("\"param dim: 64 -> 32\"").unwrap();
        assert_eq!(old, DirtyReason::Recorded("param dim: 64 -> 32".into()));
        assert_eq!(old.to_string(), "param dim: 64 -> 32");
    }
}
