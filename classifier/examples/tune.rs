//! Quick accuracy/speed probe of the ngram model on a records CSV (developer tool, used to
//! pick defaults; the pipeline's own benchmark is `bench/run.sh`).
//! `cargo run --release -p classifier --example tune -- records.csv [key=value ...]`
use classifier::features::{FeatureConfig, FeatureMatrix};
use classifier::model::{TrainConfig, TrainData, argmax_rows, macro_f1, train};
use classifier::text::record_text;
use std::collections::BTreeMap;
use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut fc = FeatureConfig::default();
    let mut tc = TrainConfig::default();
    for kv in &args[1..] {
        let (k, v) = kv.split_once('=').unwrap();
        match k {
            "buckets" => fc.buckets = v.parse().unwrap(),
            "minn" => fc.minn = v.parse().unwrap(),
            "dcn" => fc.duties_char_ngrams = v.parse().unwrap(),
            "dim" => tc.dim = v.parse().unwrap(),
            "hidden" => tc.hidden = v.parse().unwrap(),
            "epochs" => tc.epochs = v.parse().unwrap(),
            "bs" => tc.batch_size = v.parse().unwrap(),
            "lre" => tc.lr_embedding = v.parse().unwrap(),
            "lrh" => tc.lr_head = v.parse().unwrap(),
            "ls" => tc.label_smoothing = v.parse().unwrap(),
            _ => panic!("{k}"),
        }
    }
    let mut rdr = csv::Reader::from_path(&args[0]).unwrap();
    let mut texts = Vec::new();
    let mut codes = Vec::new();
    for r in rdr.records() {
        let r = r.unwrap();
        texts.push(record_text(&r[0], &r[1]));
        codes.push(r[2].to_string());
    }
    let mut labels: BTreeMap<String, u32> = BTreeMap::new();
    for c in &codes {
        let n = labels.len() as u32;
        labels.entry(c.clone()).or_insert(n);
    }
    let y: Vec<u32> = codes.iter().map(|c| labels[c]).collect();
    let n = texts.len();
    let (mut tr, mut va, mut te) = (vec![], vec![], vec![]);
    for i in 0..n {
        match i % 20 {
            0..=2 => te.push(i),
            3..=5 => va.push(i),
            _ => tr.push(i),
        }
    }
    let t0 = Instant::now();
    let sub = |idx: &[usize]| idx.iter().map(|&i| texts[i].clone()).collect::<Vec<_>>();
    let xtr = FeatureMatrix::build(&fc, &sub(&tr));
    let xva = FeatureMatrix::build(&fc, &sub(&va));
    let xte = FeatureMatrix::build(&fc, &sub(&te));
    let ytr: Vec<u32> = tr.iter().map(|&i| y[i]).collect();
    let yva: Vec<u32> = va.iter().map(|&i| y[i]).collect();
    let yte: Vec<u32> = te.iter().map(|&i| y[i]).collect();
    eprintln!(
        "featurise {:.2}s, {:.1} feats/row",
        t0.elapsed().as_secs_f64(),
        xtr.ids.len() as f64 / xtr.rows() as f64
    );
    let classes = labels.len();
    let m = train(
        &TrainData {
            x: &xtr,
            y: &ytr,
            repeats: None,
            val: Some((&xva, &yva)),
        },
        &fc,
        &tc,
        classes,
        None,
        &|e, _, s| {
            eprintln!(
                "epoch {e} val macro-F1 {s:.4} at {:.1}s",
                t0.elapsed().as_secs_f64()
            )
        },
    )
    .unwrap();
    let rows: Vec<usize> = (0..xte.rows()).collect();
    let t1 = Instant::now();
    let logits = m.logits(&xte, &rows);
    let pred = argmax_rows(&logits, classes);
    let acc = pred.iter().zip(&yte).filter(|(a, b)| a == b).count() as f64 / yte.len() as f64;
    eprintln!(
        "train {:.1}s best epoch {}; test acc {acc:.4} macro-F1 {:.4}; predict {:.0} rows/s",
        m.train_seconds,
        m.best_epoch,
        macro_f1(&yte, &pred, classes),
        rows.len() as f64 / t1.elapsed().as_secs_f64()
    );
}
