//! `promote`: move the `best` ref to the candidate model only if it beats the current best
//! on the same frozen test set (primary metric, then the secondary one), or when forced.
//! The decision, with both metric sets, is the stage's output and is kept in the ref.
//!
//! The current best is re-scored on this run's test split, so the comparison is fair even
//! when the best was trained on another split.

use artifacts::RefRecord;
use classifier::metrics::evaluate;
use classifier::predict::{InferenceConfig, Predictor};
use runner::{InputDecl, OutputDecl, Stage, StageContext, StageError, StageReport};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::Error;
use crate::records::Records;

/// Params of `promote` (config section `[promote]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PromoteParams {
    /// Ref to move.
    pub ref_name: String,
    /// Metric that decides (higher is better).
    pub primary_metric: String,
    /// Tie-breaker.
    pub secondary_metric: String,
    /// Smallest gain in the primary metric that counts as better.
    pub min_improvement: f64,
}

impl Default for PromoteParams {
    fn default() -> Self {
        PromoteParams {
            ref_name: "best".into(),
            primary_metric: "macro_f1".into(),
            secondary_metric: "accuracy".into(),
            min_improvement: 0.0,
        }
    }
}

/// The `promote` stage kind.
pub struct Promote;

const INPUTS: &[InputDecl] = &[
    InputDecl {
        name: "model",
        required: true,
        many: false,
        help: "candidate model (train.model)",
    },
    InputDecl {
        name: "metrics",
        required: true,
        many: false,
        help: "its evaluation (evaluate.metrics)",
    },
    InputDecl {
        name: "test",
        required: true,
        many: false,
        help: "the frozen test split (split.test)",
    },
];

const OUTPUTS: &[OutputDecl] = &[OutputDecl {
    name: "decision",
    file: "decision.json",
    dir: false,
}];

/// Whether `cand` beats `cur` on (primary, secondary).
pub fn better(cand: &serde_json::Value, cur: &serde_json::Value, p: &PromoteParams) -> bool {
    let get = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NEG_INFINITY);
    let (a, b) = (get(cand, &p.primary_metric), get(cur, &p.primary_metric));
    if a > b + p.min_improvement {
        return true;
    }
    a == b && get(cand, &p.secondary_metric) > get(cur, &p.secondary_metric)
}

impl Stage for Promote {
    runner::stage_metadata!("promote", version "1", "move the `best` ref to the candidate model if it beats the current best", INPUTS, OUTPUTS, PromoteParams);
    fn resolve_params(&self, raw: &toml::Table) -> Result<serde_json::Value, String> {
        runner::stage::typed_params::<PromoteParams>(raw)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<StageReport, StageError> {
        let p: PromoteParams = ctx.params()?;
        let model = ctx
            .artifacts
            .get("model")
            .and_then(|v| v.first())
            .cloned()
            .ok_or_else(|| Error::Empty("promote's `model` input must be a stage output such as train.model, so the ref can point at it".into()))?;
        let mpath = ctx.input("metrics")?;
        let metrics: serde_json::Value =
            serde_json::from_slice(&std::fs::read(mpath).map_err(|e| Error::Input {
                path: mpath.to_path_buf(),
                message: e.to_string(),
            })?)
            .map_err(|e| Error::Input {
                path: mpath.to_path_buf(),
                message: format!("is not JSON: {e}"),
            })?;
        let cand = metrics["test"].clone();
        let current = ctx.store.get_ref(&p.ref_name)?;
        let (promote, cur_metrics, reason) = match &current {
            None => (
                true,
                serde_json::Value::Null,
                format!("no `{}` model yet", p.ref_name),
            ),
            Some(r) if r.target == model => (
                false,
                cand.clone(),
                "the candidate already is the best model".to_string(),
            ),
            Some(r) => {
                let dir = ctx.store.checkout(&r.target)?;
                let cur = Predictor::load(&dir, InferenceConfig::default())?;
                let test = Records::read(ctx.input("test")?)?;
                let cm = evaluate(&cur, &test.text, &test.isco_code).metrics;
                let b = better(&cand, &cm, &p);
                let reason = format!(
                    "{} {:.4} vs {:.4} for the current best",
                    p.primary_metric,
                    cand[&p.primary_metric].as_f64().unwrap_or(0.0),
                    cm[&p.primary_metric].as_f64().unwrap_or(0.0)
                );
                (b, cm, reason)
            }
        };
        let promote_it = promote || ctx.forced;
        let decision = json!({
            "promoted": promote_it,
            "forced": ctx.forced && !promote,
            "reason": reason,
            "candidate": {"object": model.id, "metrics": cand},
            "current_best": {"object": current.as_ref().map(|r| r.target.id.clone()), "metrics": cur_metrics},
            "run_id": ctx.run_id,
        });
        if promote_it {
            ctx.store.set_ref(RefRecord {
                name: p.ref_name.clone(),
                target: model,
                key: String::new(),
                updated_at: chrono::Utc::now().to_rfc3339(),
                details: decision.clone(),
                history: vec![],
            })?;
        }
        crate::write_json(&ctx.output("decision.json"), &decision)?;
        Ok(StageReport {
            summary: vec![format!(
                "{} ({reason})",
                if promote_it {
                    format!("promoted to `{}`", p.ref_name)
                } else {
                    "not promoted".to_string()
                }
            )],
            metrics: json!({"promoted": promote_it}),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn better_uses_primary_then_secondary() {
        let p = PromoteParams::default();
        let a = json!({"macro_f1": 0.8, "accuracy": 0.9});
        let b = json!({"macro_f1": 0.7, "accuracy": 0.95});
        assert!(better(&a, &b, &p));
        assert!(!better(&b, &a, &p));
        let c = json!({"macro_f1": 0.8, "accuracy": 0.91});
        assert!(better(&c, &a, &p));
        assert!(!better(&a, &a, &p));
    }
}
