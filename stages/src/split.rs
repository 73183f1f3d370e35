//! `split`: stratified, seeded train / validation / test split.
//!
//! Records are grouped by code; each class is shuffled with its own stream (seed + code), so
//! adding records of one class never reshuffles another. A class with at least
//! `min_class_size` records gives `round(n × fraction)` (at least one) to validation and to
//! test and keeps at least one for training. Smaller classes cannot be stratified: all their
//! records go to training (the model can still learn them; they are listed in the report as
//! `train_only_classes` and cannot be scored on the test split).

use std::collections::BTreeMap;

use classifier::Rng;
use runner::{InputDecl, OutputDecl, Stage, StageContext, StageError, StageReport};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::records::Records;

/// Params of `split` (config section `[data]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SplitParams {
    /// Share of each class for the test split.
    pub test_fraction: f64,
    /// Share of each class for the validation split.
    pub validation_fraction: f64,
    /// Shuffle seed.
    pub seed: u64,
    /// Classes smaller than this go to training only.
    pub min_class_size: usize,
    /// Leave records flagged by `cluster-outliers` (the `outliers` input) out of the
    /// training split; they stay in `outliers.csv` for review. Validation and test keep them.
    pub exclude_outliers: bool,
}

impl Default for SplitParams {
    fn default() -> Self {
        SplitParams {
            test_fraction: 0.15,
            validation_fraction: 0.15,
            seed: 42,
            min_class_size: 3,
            exclude_outliers: false,
        }
    }
}

/// The `split` stage kind.
pub struct Split;

const INPUTS: &[InputDecl] = &[
    InputDecl {
        name: "records",
        required: true,
        many: false,
        help: "cleaned records (clean.records)",
    },
    InputDecl {
        name: "outliers",
        required: false,
        many: false,
        help: "per-record outlier flags (cluster-outliers.flags)",
    },
];

const OUTPUTS: &[OutputDecl] = &[
    OutputDecl {
        name: "train",
        file: "train.parquet",
        dir: false,
    },
    OutputDecl {
        name: "validation",
        file: "validation.parquet",
        dir: false,
    },
    OutputDecl {
        name: "test",
        file: "test.parquet",
        dir: false,
    },
    OutputDecl {
        name: "report",
        file: "report.json",
        dir: false,
    },
];

/// Assigns every index to 0 (train), 1 (validation) or 2 (test).
pub fn assign(codes: &[String], p: &SplitParams) -> (Vec<u8>, Vec<String>) {
    let mut by_class: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, c) in codes.iter().enumerate() {
        by_class.entry(c).or_default().push(i);
    }
    let mut part = vec![0u8; codes.len()];
    let mut train_only = Vec::new();
    for (code, mut idx) in by_class {
        let n = idx.len();
        if n < p.min_class_size.max(3) {
            train_only.push(code.to_string());
            continue;
        }
        Rng::keyed(p.seed, code).shuffle(&mut idx);
        let n_test = ((n as f64 * p.test_fraction).round() as usize).max(1);
        let n_val = ((n as f64 * p.validation_fraction).round() as usize).max(1);
        let (n_test, n_val) = if n_test + n_val >= n {
            (1, 1)
        } else {
            (n_test, n_val)
        };
        for (k, &i) in idx.iter().enumerate() {
            part[i] = if k < n_test {
                2
            } else if k < n_test + n_val {
                1
            } else {
                0
            };
        }
    }
    (part, train_only)
}

impl Stage for Split {
    runner::stage_metadata!("split", version "1", "stratified, seeded train/validation/test split", INPUTS, OUTPUTS, SplitParams);
    fn resolve_params(&self, raw: &toml::Table) -> Result<serde_json::Value, String> {
        let v = runner::stage::typed_params::<SplitParams>(raw)?;
        let p: SplitParams = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
        if !(0.0..1.0).contains(&p.test_fraction)
            || !(0.0..1.0).contains(&p.validation_fraction)
            || p.test_fraction + p.validation_fraction >= 0.9
        {
            return Err(format!(
                "test_fraction ({}) and validation_fraction ({}) must each be in [0, 1) and leave at least 10% for training",
                p.test_fraction, p.validation_fraction
            ));
        }
        Ok(v)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<StageReport, StageError> {
        let p: SplitParams = ctx.params()?;
        let recs = Records::read(ctx.input("records")?)?;
        let (part, train_only) = assign(&recs.isco_code, &p);
        let excluded = match (p.exclude_outliers, ctx.input_opt("outliers")) {
            (true, Some(f)) => crate::cluster_outliers::flagged_rows(f)?,
            (true, None) => {
                return Err(crate::Error::Empty(format!(
                    "stage `{}` has exclude_outliers = true but no `outliers` input; add `outliers = \"cluster-outliers.flags\"` to its inputs",
                    ctx.id
                ))
                .into());
            }
            _ => Default::default(),
        };
        let mut parts: [Records; 3] = Default::default();
        let mut left_out = 0;
        for (i, &k) in part.iter().enumerate() {
            if k == 0 && excluded.contains(&recs.row[i]) {
                left_out += 1;
                continue;
            }
            parts[k as usize].push_from(&recs, i);
        }
        parts[0].write(&ctx.output("train.parquet"))?;
        parts[1].write(&ctx.output("validation.parquet"))?;
        parts[2].write(&ctx.output("test.parquet"))?;
        let classes = |r: &Records| {
            r.isco_code
                .iter()
                .collect::<std::collections::BTreeSet<_>>()
                .len()
        };
        let metrics = json!({
            "train": parts[0].len(),
            "validation": parts[1].len(),
            "test": parts[2].len(),
            "classes": classes(&recs),
            "test_classes": classes(&parts[2]),
            "train_only_classes": train_only.len(),
            "outliers_left_out_of_train": left_out,
        });
        crate::write_json(
            &ctx.output("report.json"),
            &json!({"counts": metrics, "train_only_classes": train_only, "params": ctx.params}),
        )?;
        Ok(StageReport {
            summary: vec![format!(
                "train {}, validation {}, test {} ({} classes, {} too small to stratify)",
                parts[0].len(),
                parts[1].len(),
                parts[2].len(),
                classes(&recs),
                train_only.len()
            )],
            metrics,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stratified_deterministic_and_small_classes_train_only() {
        let mut codes = Vec::new();
        for _ in 0..100 {
            codes.push("2512".to_string());
        }
        for _ in 0..20 {
            codes.push("5120".to_string());
        }
        codes.push("9999".to_string());
        codes.push("9999".to_string());
        let p = SplitParams::default();
        let (a, small) = assign(&codes, &p);
        let (b, _) = assign(&codes, &p);
        assert_eq!(a, b);
        assert_eq!(small, vec!["9999".to_string()]);
        let count = |code: &str, k: u8| {
            codes
                .iter()
                .zip(&a)
                .filter(|(c, x)| c.as_str() == code && **x == k)
                .count()
        };
        assert_eq!(
            (count("2512", 0), count("2512", 1), count("2512", 2)),
            (70, 15, 15)
        );
        assert_eq!((count("5120", 1), count("5120", 2)), (3, 3));
        assert_eq!(count("9999", 0), 2);
    }
}
