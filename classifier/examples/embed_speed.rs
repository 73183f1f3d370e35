//! Encoder throughput on real rows (bench/encoder-speed.sh runs it beside PyTorch).
//!
//! `cargo run --release -p classifier --example embed_speed -- ENCODER_DIR CSV ROWS MAX_LEN FIELD`
//! FIELD is `title` (job_title) or `record` (job_title + ". " + duties_description).
//! `PRECISION=bf16` (or `fp16`) runs the products in mixed precision (libtorch builds:
//! `--features tch`, or the bfloat16 kernel on CPUs with AVX-512 BF16); `BATCH` sets the
//! batch size (32); `NO_COSINE=1` skips the fp32 pass that measures how far the vectors moved.

use std::time::Instant;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 6 {
        eprintln!("usage: embed_speed ENCODER_DIR CSV ROWS MAX_LEN title|record");
        std::process::exit(2);
    }
    let rows: usize = a[3].parse().expect("ROWS is a number");
    let max_len: usize = a[4].parse().expect("MAX_LEN is a number");
    let mut rdr = csv::Reader::from_path(&a[2]).expect("CSV opens");
    let texts: Vec<String> = rdr
        .records()
        .take(rows)
        .map(|r| {
            let r = r.expect("CSV row");
            match a[5].as_str() {
                "title" => r[0].to_string(),
                _ => format!("{}. {}", &r[0], &r[1]),
            }
        })
        .collect();
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut enc =
        classifier::encoder::Encoder::load(a[1].as_ref(), max_len).expect("encoder loads");
    let precision: classifier::device::Precision = std::env::var("PRECISION")
        .unwrap_or_else(|_| "fp32".into())
        .parse()
        .unwrap_or_else(|e| panic!("PRECISION: {e}"));
    enc.set_precision(precision);
    // Warm-up on a few rows, then the timed pass.
    enc.embed(&refs[..32.min(refs.len())], 32, false, &|_| {})
        .expect("embeds");
    let t = Instant::now();
    let batch: usize = std::env::var("BATCH")
        .ok()
        .and_then(|b| b.parse().ok())
        .unwrap_or(32);
    let v = enc.embed(&refs, batch, false, &|_| {}).expect("embeds");
    let s = t.elapsed().as_secs_f64();
    let tokens: usize = enc
        .tokenize(&refs)
        .expect("tokenizes")
        .iter()
        .map(Vec::len)
        .sum();
    println!(
        "burn {} {precision}: {} rows ({}) in {s:.2}s = {:.1} rows/s, mean {:.1} tokens, checksum {:.4}",
        if cfg!(feature = "tch") {
            "libtorch"
        } else {
            "flex"
        },
        refs.len(),
        a[5],
        refs.len() as f64 / s,
        tokens as f64 / refs.len() as f64,
        v.iter().map(|x| *x as f64).sum::<f64>()
    );
    if !precision.is_fp32() && std::env::var_os("NO_COSINE").is_none() {
        // How far the mixed-precision vectors are from the fp32 ones (cosine per row).
        enc.set_precision(classifier::device::Precision::Fp32);
        let full = enc.embed(&refs, batch, false, &|_| {}).expect("embeds");
        let d = enc.dim();
        let cos: Vec<f64> = v
            .chunks(d)
            .zip(full.chunks(d))
            .map(|(a, b)| {
                let dot: f64 = a.iter().zip(b).map(|(x, y)| (x * y) as f64).sum();
                let n = |u: &[f32]| u.iter().map(|x| (x * x) as f64).sum::<f64>().sqrt();
                dot / (n(a) * n(b))
            })
            .collect();
        println!(
            "  cosine to fp32: mean {:.5}, min {:.5}",
            cos.iter().sum::<f64>() / cos.len() as f64,
            cos.iter().copied().fold(f64::INFINITY, f64::min)
        );
    }
}
