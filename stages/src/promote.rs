//! `promote`: move the `best` ref to the candidate model only if it beats the current best
//! on the same frozen test set (primary metric, then the secondary one), or when forced.
//! The decision, with both metric sets, is the stage's output and is kept in the ref.
//!
//! The current best is re-scored on this run's test split (and on the `extra` labelled files,
//! named like `evaluate` names them), so the comparison is fair even when the best was
//! trained on another split.
//!
//! After fine-tuning, the deciding set is the corrections hold-out (`primary_on =
//! "corrections_holdout"`) and `max_test_regression` guards the frozen test split: the
//! candidate is refused if its primary or secondary metric there falls more than that margin
//! below the current best's.

use artifacts::RefRecord;
use classifier::metrics::evaluate;
use classifier::predict::{InferenceConfig, Predictor};
use runner::{InputDecl, OutputDecl, Stage, StageContext, StageError, StageReport};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::columns::{self, LabelledColumns};
use crate::error::Error;
use crate::evaluate::read_labelled;
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
    /// Evaluation set the primary metric is read from: `test`, or the name of an `extra`
    /// file (its file stem), e.g. `corrections_holdout`.
    pub primary_on: String,
    /// Largest drop of the primary or secondary metric on the frozen test split that is
    /// still accepted (absolute, e.g. 0.005 = half a point); unset: not checked.
    pub max_test_regression: Option<f64>,
}

impl Default for PromoteParams {
    fn default() -> Self {
        PromoteParams {
            ref_name: "best".into(),
            primary_metric: "macro_f1".into(),
            secondary_metric: "accuracy".into(),
            min_improvement: 0.0,
            primary_on: "test".into(),
            max_test_regression: None,
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
    InputDecl {
        name: "extra",
        required: false,
        many: true,
        help: "extra labelled files the candidate was evaluated on (to re-score the current best on)",
    },
];

const OUTPUTS: &[OutputDecl] = &[
    OutputDecl {
        name: "best",
        file: "best_model",
        dir: true,
    },
    OutputDecl {
        name: "decision",
        file: "decision.json",
        dir: false,
    },
];

/// Why the candidate is refused on the frozen test split, if it regresses there by more
/// than `max_test_regression` (None: accepted).
pub fn test_regression(
    cand: &serde_json::Value,
    cur: &serde_json::Value,
    p: &PromoteParams,
) -> Option<String> {
    let margin = p.max_test_regression?;
    let get = |v: &serde_json::Value, k: &str| v[k].as_f64().unwrap_or(f64::NEG_INFINITY);
    [&p.primary_metric, &p.secondary_metric]
        .into_iter()
        .find(|m| get(cand, m) < get(cur, m) - margin)
        .map(|m| {
            format!(
                "test {m} {:.4} is more than {margin} below the current best's {:.4}",
                get(cand, m),
                get(cur, m)
            )
        })
}

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
    runner::stage_metadata!("promote", version "8", "move the `best` ref to the candidate model if it beats the current best", INPUTS, OUTPUTS, names columns::param_names::<LabelledColumns>(runner::stage::param_names_of::<PromoteParams>()));
    /// `models/best` shows the model the ref points at now: a later promotion (a fine-tune's)
    /// moves the ref, and a fresh or restored decision of this stage does not undo that in
    /// the workspace, where `predict -m models/best` and lineage read it.
    fn workspace_view(
        &self,
        output: &str,
        store: &artifacts::Store,
        params: &serde_json::Value,
    ) -> Option<artifacts::OutputRef> {
        if output != "best" {
            return None;
        }
        let name = params.get("ref_name")?.as_str()?;
        Some(store.get_ref(name).ok()??.target)
    }
    fn resolve_params(&self, raw: &toml::Table) -> Result<serde_json::Value, String> {
        let (own, names): (toml::Table, toml::Table) =
            columns::split_params::<LabelledColumns, _, _>(raw.clone());
        columns::resolve::<LabelledColumns>(
            runner::stage::typed_params::<PromoteParams>(&own)?,
            &names,
        )
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<StageReport, StageError> {
        let (p, columns): (PromoteParams, LabelledColumns) = columns::read_params(ctx.params)?;
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
        let set =
            if p.primary_on == "test" || metrics.get(&p.primary_on).is_some_and(|v| !v.is_null()) {
                p.primary_on.clone()
            } else {
                // An empty hold-out (too few corrections) is skipped by `evaluate`.
                "test".to_string()
            };
        let cand = metrics[&set].clone();
        let cand_test = metrics["test"].clone();
        let current = ctx.store.get_ref(&p.ref_name)?;
        // A best model whose objects are damaged or gone (quarantined by a hash check) can
        // be neither served nor re-scored: the candidate replaces it.
        let lost = current
            .as_ref()
            .is_some_and(|r| !ctx.store.output_intact(&r.target));
        let (promote, cur_metrics, reason) = match &current {
            None => (
                true,
                serde_json::Value::Null,
                format!("no `{}` model yet", p.ref_name),
            ),
            Some(r) if lost => (
                true,
                serde_json::Value::Null,
                format!(
                    "the current `{}` model {} is damaged or missing in the store",
                    p.ref_name,
                    &r.target.id[..12.min(r.target.id.len())]
                ),
            ),
            Some(r) if r.target == model => (
                false,
                {
                    let mut all = json!({"test": cand_test.clone()});
                    all[&set] = cand.clone();
                    all
                },
                "the candidate already is the best model".to_string(),
            ),
            Some(r) => {
                let dir = ctx.store.checkout(&r.target)?;
                let cur = Predictor::load(&dir, InferenceConfig::default())?;
                crate::embeddings::attach_shared_cache(ctx, &cur);
                let test = Records::read(ctx.input("test")?)?;
                let cur_test = evaluate(&cur, &test.text, &test.isco_code).metrics;
                let cm = if set == "test" {
                    cur_test.clone()
                } else {
                    let path = ctx
                        .input_files("extra")
                        .iter()
                        .find(|f| f.file_stem().is_some_and(|s| s.to_string_lossy() == set))
                        .ok_or_else(|| Error::Empty(format!(
                            "promote decides on `{set}` (primary_on) but no `extra` input is named so; add the file `evaluate` scored as `{set}` to promote's `extra` inputs"
                        )))?;
                    let l =
                        read_labelled(path, &columns, &cur.meta.labels, &cur.meta.reference_units)?;
                    evaluate(&cur, &l.texts, &l.codes).metrics
                };
                crate::embeddings::flush_shared_cache(&cur);
                let b = better(&cand, &cm, &p);
                let regression = test_regression(&cand_test, &cur_test, &p);
                let mut reason = format!(
                    "{set} {} {:.4} vs {:.4} for the current best",
                    p.primary_metric,
                    cand[&p.primary_metric].as_f64().unwrap_or(0.0),
                    cm[&p.primary_metric].as_f64().unwrap_or(0.0)
                );
                if set != p.primary_on {
                    reason.push_str(&format!(
                        " (`{}` has no rows; decided on test)",
                        p.primary_on
                    ));
                }
                if let Some(r) = &regression {
                    reason.push_str(&format!("; refused: {r}"));
                }
                let mut all = json!({"test": cur_test});
                all[&set] = cm;
                let cm = all;
                (b && regression.is_none(), cm, reason)
            }
        };
        let promote_it = promote || ctx.forced;
        let mut cand_all = json!({"test": cand_test});
        cand_all[&set] = cand;
        let decision = json!({
            "promoted": promote_it,
            "forced": ctx.forced && !promote,
            "reason": reason,
            "decided_on": set,
            "candidate": {"object": model.id, "metrics": cand_all},
            "current_best": {"object": current.as_ref().map(|r| r.target.id.clone()), "metrics": cur_metrics},
            "run_id": ctx.run_id,
        });
        if promote_it {
            ctx.store.set_ref(RefRecord {
                name: p.ref_name.clone(),
                target: model.clone(),
                key: Default::default(),
                updated_at: artifacts::timestamp(),
                details: decision.clone(),
                history: vec![],
            })?;
        }
        crate::write_json(&ctx.output("decision.json"), &decision)?;
        // The model the ref points at now, so the workspace shows the promoted model beside
        // the last trained one (the same store objects: no extra space in the store).
        let best = if promote_it {
            model
        } else {
            current
                .expect("a model that is not promoted has a current best")
                .target
        };
        ctx.store.materialise(&best, &ctx.output("best_model"))?;
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

    #[test]
    fn test_regression_beyond_the_margin_refuses() {
        let mut p = PromoteParams::default();
        let cur = json!({"macro_f1": 0.86, "accuracy": 0.95});
        let slight = json!({"macro_f1": 0.857, "accuracy": 0.946});
        let big = json!({"macro_f1": 0.86, "accuracy": 0.94});
        assert_eq!(test_regression(&big, &cur, &p), None, "unset: not checked");
        p.max_test_regression = Some(0.005);
        assert_eq!(test_regression(&slight, &cur, &p), None);
        let why = test_regression(&big, &cur, &p).unwrap();
        assert!(why.contains("accuracy 0.9400"), "{why}");
    }
}
