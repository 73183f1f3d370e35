//! Exact against HNSW search as a retrieval index grows (bench/ann-scale.sh runs it).
//!
//! `cargo run --release -p classifier --example ann_scale -- MODEL_DIR SHARED_CACHE QUERIES_CSV SIZES`
//!
//! MODEL_DIR is a trained ensemble model (its `retrieval/` index), SHARED_CACHE the store's
//! `shared/embeddings` directory (so the queries are not embedded again), QUERIES_CSV a CSV
//! whose first column is a job title (the queries), SIZES comma-separated index sizes. Indexes
//! larger than the model's title + duties entries are filled with perturbed copies of them
//! (cosine ≈ 0.95 to their original, like a spelling variant, same class).

use std::time::Instant;

use classifier::ann::{Ann, SearchConfig};
use classifier::retrieval::{Index, Retrieval, class_max};
use rayon::prelude::*;

fn main() {
    let a: Vec<String> = std::env::args().collect();
    if a.len() != 5 {
        eprintln!("usage: ann_scale MODEL_DIR SHARED_CACHE QUERIES_CSV SIZES");
        std::process::exit(2);
    }
    let mut r = Retrieval::load(a[1].as_ref()).expect("an ensemble model directory");
    // The vectors, out of the graphs of a model whose indexes have them.
    r.titles.detach_graph();
    r.duties.detach_graph();
    if let Err(e) = r.attach_shared_cache(a[2].as_ref()) {
        eprintln!("shared cache not used: {e}");
    }
    let d = r.encoder.dim();
    let mut rdr = csv::Reader::from_path(&a[3]).expect("queries CSV opens");
    let titles: Vec<String> = rdr
        .records()
        .map(|row| classifier::text::normalize(&row.expect("CSV row")[0]))
        .collect();
    let t = Instant::now();
    let (queries, embedded) = r
        .cache
        .lock()
        .unwrap()
        .embed(&r.encoder, &titles, &|_, _| {})
        .expect("queries embed");
    let q = titles.len();
    println!(
        "queries: {q} titles ({embedded} embedded now, {:.1} s); base index: {} title + {} duty entries, dim {d}",
        t.elapsed().as_secs_f64(),
        r.titles.len(),
        r.duties.len()
    );
    let classes = 1 + *r
        .titles
        .class
        .iter()
        .chain(&r.duties.class)
        .max()
        .expect("entries") as usize;
    let mut base = r.titles.clone();
    base.texts.extend(r.duties.texts.iter().cloned());
    base.class.extend(&r.duties.class);
    base.source.extend(r.duties.source.iter().cloned());
    base.vectors.extend(&r.duties.vectors);
    let cfg = SearchConfig::default();
    println!(
        "HNSW: ef_construction {}, candidates {}; cores {}",
        cfg.ef_construction,
        cfg.candidates,
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    println!(
        "| entries | exact: queries/s | HNSW build s | HNSW: queries/s | speed-up | recall@10 | best class agrees | mean abs. diff of the best class's score |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut rng = classifier::Rng::new(11);
    for size in a[4].split(',').map(|s| s.parse::<usize>().expect("a size")) {
        let ix = grow(&base, size, d, &mut rng);
        let t = Instant::now();
        let exact = class_max(&queries, &ix, d, classes);
        let exact_s = t.elapsed().as_secs_f64();
        let exact_top: Vec<Vec<usize>> = queries
            .par_chunks(d)
            .map(|qv| top10(qv, &ix.vectors, d))
            .collect();
        let t = Instant::now();
        let ann = Ann::build(&ix.vectors, d, &cfg, 42);
        let build_s = t.elapsed().as_secs_f64();
        let hits = ann.search(&queries);
        let mut approx = ix.clone();
        approx.ann = Some(std::sync::Arc::new(ann));
        let t = Instant::now();
        let got = class_max(&queries, &approx, d, classes);
        let ann_s = t.elapsed().as_secs_f64();
        let found: usize = exact_top
            .iter()
            .zip(&hits)
            .map(|(want, h)| {
                want.iter()
                    .filter(|&&w| h.iter().take(10).any(|(e, _)| *e as usize == w))
                    .count()
            })
            .sum();
        let mut agree = 0;
        let mut diff = 0f64;
        for (e, g) in exact.chunks(classes).zip(got.chunks(classes)) {
            let be = argmax(e);
            agree += (be == argmax(g)) as usize;
            diff += (e[be] - g[be]).abs() as f64;
        }
        println!(
            "| {size} | {:.0} | {build_s:.1} | {:.0} | {:.1}× | {:.4} | {:.4} | {:.5} |",
            q as f64 / exact_s,
            q as f64 / ann_s,
            exact_s / ann_s,
            found as f64 / (10 * q) as f64,
            agree as f64 / q as f64,
            diff / q as f64
        );
    }
}

/// The base index, then perturbed copies of its entries until it has `size` entries.
fn grow(base: &Index, size: usize, d: usize, rng: &mut classifier::Rng) -> Index {
    let mut ix = base.clone();
    ix.texts.truncate(size);
    ix.class.truncate(size);
    ix.source.truncate(size);
    ix.vectors.truncate(size * d);
    let n = base.len();
    while ix.len() < size {
        let j = rng.below(n);
        let v = &base.vectors[j * d..(j + 1) * d];
        // Noise of norm ~0.33: cosine ≈ 0.95 with the original after renormalising.
        let scale = 0.33 / (d as f32).sqrt() * 3f32.sqrt() * 2.0;
        let mut w: Vec<f32> = v
            .iter()
            .map(|x| x + scale * (rng.unit() as f32 - 0.5))
            .collect();
        let norm = w.iter().map(|x| x * x).sum::<f32>().sqrt();
        w.iter_mut().for_each(|x| *x /= norm);
        ix.vectors.extend(w);
        ix.texts.push(base.texts[j].clone());
        ix.class.push(base.class[j]);
        ix.source.push(classifier::retrieval::EntrySource::Record);
    }
    ix.ann = None;
    ix
}

fn top10(q: &[f32], vectors: &[f32], d: usize) -> Vec<usize> {
    let mut s: Vec<(f32, usize)> = vectors
        .chunks(d)
        .enumerate()
        .map(|(i, v)| (classifier::ann::dot(q, v), i))
        .collect();
    s.select_nth_unstable_by(9, |a, b| b.0.total_cmp(&a.0));
    s.truncate(10);
    s.into_iter().map(|(_, i)| i).collect()
}

fn argmax(v: &[f32]) -> usize {
    v.iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .map_or(0, |(i, _)| i)
}
