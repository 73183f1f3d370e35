//! `cluster-outliers`: find historical records whose code is probably wrong.
//!
//! Two signals, both free of all-pairs work:
//!
//! 1. **Out-of-fold label consistency.** The records are split into `folds`; for each fold an
//!    `ngram` model (small and fast: `dim`, `epochs`) is trained on the other folds and
//!    scores the held-out records. A record whose given code gets a low out-of-fold
//!    probability while another code gets a high one is suspect:
//!    `score = p(best other code) − p(given code)`.
//! 2. **Cluster structure within each code.** Each record is represented by its out-of-fold
//!    model's embedding bag (a dense `dim`-vector, L2-normalised); DBSCAN (linfa-clustering,
//!    kd-tree) runs *within each code's records* — never over all 150k at once — so its cost
//!    is the sum over codes. A record DBSCAN leaves as noise in its own code is isolated
//!    from the others with that code, and its score gains `noise_bonus`.
//!
//! Records whose score reaches `threshold` are flagged. Output: the flagged records (Parquet
//! and CSV, with row, text, given and suggested code, score, cluster and reason) and a
//! per-record `flags` table that `split` reads when `exclude_outliers = true`. With the
//! optional `truth` input (`row,label_is_noise`), the report adds precision, recall and the
//! precision–recall curve.

use std::collections::BTreeMap;

use artifacts::table::{Column, Table};
use classifier::Rng;
use classifier::calibrate::softmax_rows;
use classifier::features::{FeatureConfig, FeatureMatrix};
use classifier::model::{TrainConfig, TrainData, bags, train};
use linfa::traits::Transformer;
use linfa_clustering::Dbscan;
use runner::{InputDecl, OutputDecl, Stage, StageContext, StageError, StageReport};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::error::Error;
use crate::records::{Records, read_row_map};

/// Params of `cluster-outliers` (config section `[outliers]`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierParams {
    /// Out-of-fold folds.
    pub folds: usize,
    /// Embedding dimension of the fold models.
    pub dim: usize,
    /// Epochs of the fold models.
    pub epochs: usize,
    /// Hash buckets of the fold models.
    pub buckets: usize,
    /// Flag records whose score reaches this.
    pub threshold: f64,
    /// Skip DBSCAN (label consistency only).
    pub skip_clustering: bool,
    /// Skip DBSCAN for codes with more records than this (their structure is dense anyway).
    pub skip_clustering_threshold: usize,
    /// DBSCAN radius on L2-normalised bags.
    pub dbscan_eps: f64,
    /// DBSCAN minimum neighbours of a core point.
    pub dbscan_min_points: usize,
    /// Score added to records DBSCAN leaves as noise in their code.
    pub noise_bonus: f64,
    /// Seed.
    pub seed: u64,
}

impl Default for OutlierParams {
    fn default() -> Self {
        OutlierParams {
            folds: 2,
            dim: 32,
            epochs: 4,
            buckets: 1 << 18,
            threshold: 0.5,
            skip_clustering: false,
            skip_clustering_threshold: 5000,
            dbscan_eps: 0.3,
            dbscan_min_points: 4,
            noise_bonus: 0.1,
            seed: 7,
        }
    }
}

/// The `cluster-outliers` stage kind.
pub struct ClusterOutliers;

const INPUTS: &[InputDecl] = &[
    InputDecl {
        name: "records",
        required: true,
        many: false,
        help: "cleaned records (clean.records)",
    },
    InputDecl {
        name: "truth",
        required: false,
        many: false,
        help: "optional CSV with row,label_is_noise to score the detector",
    },
];

const OUTPUTS: &[OutputDecl] = &[
    OutputDecl {
        name: "outliers",
        file: "outliers.parquet",
        dir: false,
    },
    OutputDecl {
        name: "outliers_csv",
        file: "outliers.csv",
        dir: false,
    },
    OutputDecl {
        name: "flags",
        file: "flags.parquet",
        dir: false,
    },
    OutputDecl {
        name: "report",
        file: "report.json",
        dir: false,
    },
];

/// Reads the flags table: rows (raw-file positions) flagged as outliers.
pub fn flagged_rows(path: &std::path::Path) -> Result<std::collections::HashSet<i64>, Error> {
    let t = Table::read_parquet(path)?;
    let rows = t.int_col("row", path)?;
    let flagged = match t.column("flagged") {
        Some(Column::Bool(v)) => v.clone(),
        _ => {
            return Err(Error::Input {
                path: path.to_path_buf(),
                message: "has no boolean column `flagged`; is it cluster-outliers.flags?".into(),
            });
        }
    };
    Ok(rows
        .iter()
        .zip(flagged)
        .filter(|(_, f)| *f)
        .map(|(r, _)| *r)
        .collect())
}

impl Stage for ClusterOutliers {
    runner::stage_metadata!("cluster-outliers", version "2", "flag records whose code is probably wrong (out-of-fold consistency + per-code DBSCAN)", INPUTS, OUTPUTS, OutlierParams);
    fn resolve_params(&self, raw: &toml::Table) -> Result<serde_json::Value, String> {
        let v = runner::stage::typed_params::<OutlierParams>(raw)?;
        let p: OutlierParams = serde_json::from_value(v.clone()).map_err(|e| e.to_string())?;
        if p.folds < 2 {
            return Err(format!("folds must be at least 2 (got {})", p.folds));
        }
        classifier::training::spec::positive(&[("buckets", p.buckets), ("dim", p.dim)])?;
        classifier::model::check_model_size(p.buckets, p.dim, 0)?;
        Ok(v)
    }

    fn run(&self, ctx: &StageContext<'_>) -> Result<StageReport, StageError> {
        let p: OutlierParams = ctx.params()?;
        let recs = Records::read(ctx.input("records")?)?;
        let n = recs.len();
        let started = std::time::Instant::now();
        let labels: Vec<String> = recs
            .isco_code
            .iter()
            .cloned()
            .collect::<std::collections::BTreeSet<_>>()
            .into_iter()
            .collect();
        let y: Vec<u32> = recs
            .isco_code
            .iter()
            .map(|c| labels.binary_search(c).expect("label") as u32)
            .collect();
        let c = labels.len();
        let fc = FeatureConfig {
            buckets: p.buckets,
            ..FeatureConfig::default()
        };
        let tc = TrainConfig {
            dim: p.dim,
            epochs: p.epochs,
            early_stopping_patience: p.epochs,
            seed: p.seed,
            ..TrainConfig::default()
        };
        let x = FeatureMatrix::build(&fc, &recs.text);
        let mut rng = Rng::new(p.seed);
        let fold: Vec<usize> = (0..n).map(|_| rng.below(p.folds)).collect();
        let mut p_given = vec![0f64; n];
        let mut p_other = vec![0f64; n];
        let mut suggest = vec![0u32; n];
        let mut bag_vecs = vec![0f32; n * p.dim];
        ctx.progress.start(p.folds as u64, "out-of-fold models");
        for k in 0..p.folds {
            let tr: Vec<usize> = (0..n).filter(|&i| fold[i] != k).collect();
            let te: Vec<usize> = (0..n).filter(|&i| fold[i] == k).collect();
            if tr.is_empty() || te.is_empty() {
                continue;
            }
            let xtr = x.select(&tr);
            let ytr: Vec<u32> = tr.iter().map(|&i| y[i]).collect();
            let net = train(
                &TrainData {
                    x: &xtr,
                    y: &ytr,
                    repeats: None,
                    val: None,
                },
                &fc,
                &tc,
                c,
                None,
                &|_, _, _| {},
            )?;
            let logits = net.logits(&x, &te);
            let probs = softmax_rows(&logits, c, 1.0);
            let b = bags(&net.table, p.dim, &x, &te);
            for (j, &i) in te.iter().enumerate() {
                let row = &probs[j * c..(j + 1) * c];
                p_given[i] = row[y[i] as usize] as f64;
                let (best, pb) = row
                    .iter()
                    .enumerate()
                    .filter(|(l, _)| *l != y[i] as usize)
                    .fold(
                        (0usize, f32::MIN),
                        |a, (l, &v)| if v > a.1 { (l, v) } else { a },
                    );
                p_other[i] = pb as f64;
                suggest[i] = best as u32;
                let v = &b[j * p.dim..(j + 1) * p.dim];
                let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt().max(1e-12);
                for (d, a) in v.iter().enumerate() {
                    bag_vecs[i * p.dim + d] = a / norm;
                }
            }
            ctx.progress.inc(1);
        }
        let oof_seconds = started.elapsed().as_secs_f64();

        // DBSCAN within each code.
        let mut cluster: Vec<i64> = vec![-1; n];
        let mut noise = vec![false; n];
        let mut clustered_codes = 0;
        if !p.skip_clustering {
            let mut by_code: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
            for (i, &l) in y.iter().enumerate() {
                by_code.entry(l).or_default().push(i);
            }
            let mut next_id = 0i64;
            for idx in by_code.values() {
                if idx.len() < 2 * p.dbscan_min_points || idx.len() > p.skip_clustering_threshold {
                    continue;
                }
                clustered_codes += 1;
                let mut data = ndarray::Array2::<f32>::zeros((idx.len(), p.dim));
                for (r, &i) in idx.iter().enumerate() {
                    for d in 0..p.dim {
                        data[[r, d]] = bag_vecs[i * p.dim + d];
                    }
                }
                let assign = Dbscan::params(p.dbscan_min_points)
                    .tolerance(p.dbscan_eps as f32)
                    .transform(&data)
                    .map_err(|e| {
                        Error::Empty(format!(
                            "DBSCAN failed: {e}; check dbscan_eps and dbscan_min_points"
                        ))
                    })?;
                let mut max_id = -1i64;
                for (r, a) in assign.iter().enumerate() {
                    match a {
                        Some(cid) => {
                            cluster[idx[r]] = next_id + *cid as i64;
                            max_id = max_id.max(*cid as i64);
                        }
                        None => noise[idx[r]] = true,
                    }
                }
                next_id += max_id + 1;
            }
        }
        let score: Vec<f64> = (0..n)
            .map(|i| p_other[i] - p_given[i] + if noise[i] { p.noise_bonus } else { 0.0 })
            .collect();
        let flagged: Vec<bool> = score.iter().map(|s| *s >= p.threshold).collect();
        let fidx: Vec<usize> = {
            let mut v: Vec<usize> = (0..n).filter(|&i| flagged[i]).collect();
            v.sort_by(|a, b| score[*b].total_cmp(&score[*a]));
            v
        };
        let reason = |i: usize| {
            let mut r = format!(
                "out-of-fold model prefers {} (p={:.2}) to the given {} (p={:.2})",
                labels[suggest[i] as usize], p_other[i], recs.isco_code[i], p_given[i]
            );
            if noise[i] {
                r.push_str("; isolated among the records with its code (DBSCAN noise)");
            }
            r
        };
        let out = Table::new()
            .with(
                "row",
                Column::Int(fidx.iter().map(|&i| recs.row[i]).collect()),
            )
            .with(
                "text",
                Column::Str(fidx.iter().map(|&i| recs.text[i].clone()).collect()),
            )
            .with(
                "job_title",
                Column::Str(fidx.iter().map(|&i| recs.job_title[i].clone()).collect()),
            )
            .with(
                "given_code",
                Column::Str(fidx.iter().map(|&i| recs.isco_code[i].clone()).collect()),
            )
            .with(
                "suggested_code",
                Column::Str(
                    fidx.iter()
                        .map(|&i| labels[suggest[i] as usize].clone())
                        .collect(),
                ),
            )
            .with(
                "score",
                Column::Float(fidx.iter().map(|&i| score[i]).collect()),
            )
            .with(
                "cluster",
                Column::Int(fidx.iter().map(|&i| cluster[i]).collect()),
            )
            .with(
                "reason",
                Column::Str(fidx.iter().map(|&i| reason(i)).collect()),
            );
        out.write_parquet(&ctx.output("outliers.parquet"))?;
        out.write_csv(&ctx.output("outliers.csv"))?;
        Table::new()
            .with("row", Column::Int(recs.row.clone()))
            .with("score", Column::Float(score.clone()))
            .with("flagged", Column::Bool(flagged.clone()))
            .write_parquet(&ctx.output("flags.parquet"))?;

        let mut metrics = json!({
            "records": n,
            "flagged": fidx.len(),
            "flagged_share": fidx.len() as f64 / n.max(1) as f64,
            "dbscan_noise": noise.iter().filter(|b| **b).count(),
            "codes_clustered": clustered_codes,
            "out_of_fold_seconds": oof_seconds,
            "seconds": started.elapsed().as_secs_f64(),
        });
        let mut summary = vec![format!(
            "{} of {} records flagged ({:.2} %), {} codes clustered, {:.1}s",
            fidx.len(),
            n,
            100.0 * fidx.len() as f64 / n.max(1) as f64,
            clustered_codes,
            started.elapsed().as_secs_f64()
        )];
        let mut report = json!({"counts": metrics.clone(), "params": ctx.params});
        if let Some(tp) = ctx.input_opt("truth") {
            let truth = read_row_map(tp, "label_is_noise")?;
            let is_noise: Vec<bool> = recs
                .row
                .iter()
                .map(|r| {
                    truth
                        .get(r)
                        .is_some_and(|v| v == "1" || v.eq_ignore_ascii_case("true"))
                })
                .collect();
            let positives = is_noise.iter().filter(|b| **b).count().max(1) as f64;
            let tp_at = |t: f64| {
                let flagged = (0..n).filter(|&i| score[i] >= t).count();
                let hits = (0..n).filter(|&i| score[i] >= t && is_noise[i]).count();
                (flagged, hits)
            };
            let (f, h) = tp_at(p.threshold);
            let precision = if f > 0 { h as f64 / f as f64 } else { 0.0 };
            let recall = h as f64 / positives;
            let curve: Vec<serde_json::Value> = (-10..=19)
                .map(|k| {
                    let t = k as f64 * 0.05;
                    let (f, h) = tp_at(t);
                    json!({"threshold": t, "flagged": f, "precision": if f > 0 { h as f64 / f as f64 } else { 0.0 }, "recall": h as f64 / positives})
                })
                .collect();
            metrics["precision"] = json!(precision);
            metrics["recall"] = json!(recall);
            report["truth"] = json!({"precision": precision, "recall": recall, "noisy_records": positives, "pr_curve": curve});
            summary.push(format!(
                "against the truth file: precision {precision:.3}, recall {recall:.3}"
            ));
        }
        crate::write_json(&ctx.output("report.json"), &report)?;
        Ok(StageReport { metrics, summary })
    }
}
