//! The burn ports of BERT and MPNet against PyTorch: embeddings of the real all-MiniLM-L6-v2
//! and all-mpnet-base-v2 must match sentence-transformers' within 1e-4 (numbers in
//! tests/fixtures/{minilm,mpnet}_parity.json, made by bench/encoder_parity.py). Needs
//! `isco-dag models fetch minilm` and `… fetch mpnet`; CI fetches both and sets
//! ISCO_DAG_REQUIRE_ENCODER=1 so a missing encoder fails instead of skipping.

use std::path::PathBuf;

use serde_json::Value;

/// The encoder directory `dir_name` under models/pretrained (for MiniLM,
/// `ISCO_DAG_ENCODER_DIR` overrides it), or `None` to skip.
fn encoder_dir(dir_name: &str, fetch: &str) -> Option<PathBuf> {
    let default = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("models/pretrained")
        .join(dir_name);
    let dir = match std::env::var_os("ISCO_DAG_ENCODER_DIR") {
        Some(d) if fetch == "minilm" => PathBuf::from(d),
        _ => default,
    };
    if dir.join("model.safetensors").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var("ISCO_DAG_REQUIRE_ENCODER").as_deref() != Ok("1"),
        "ISCO_DAG_REQUIRE_ENCODER=1 but {} has no encoder; run `isco-dag models fetch {fetch}`",
        dir.display()
    );
    eprintln!(
        "skipping: no encoder in {} (run `isco-dag models fetch {fetch}`)",
        dir.display()
    );
    None
}

/// Embeds the fixture's sentences in one batch of mixed lengths (padding must not leak into
/// any row) and checks them against PyTorch's.
fn matches_pytorch(dir: &std::path::Path, fixture: &str) {
    let fixture: Value = serde_json::from_str(fixture).expect("fixture is JSON");
    let sentences: Vec<&str> = fixture["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    // A model whose sentence-transformers modules end in Normalize gives unit vectors.
    let normalised = fixture["normalised"].as_bool().unwrap_or(false);
    let enc = classifier::encoder::Encoder::load(dir, 128).unwrap();
    let got = enc.embed(&sentences, 4, normalised, &|_| {}).unwrap();
    let d = enc.dim();
    let mut worst = 0f64;
    for (i, want) in fixture["embeddings"].as_array().unwrap().iter().enumerate() {
        let want = want.as_array().unwrap();
        assert_eq!(want.len(), d);
        for (k, w) in want.iter().enumerate() {
            let diff = (got[i * d + k] as f64 - w.as_f64().unwrap()).abs();
            worst = worst.max(diff);
        }
    }
    eprintln!("max |burn - pytorch| = {worst:e}");
    assert!(
        worst < 1e-4,
        "burn and PyTorch embeddings differ by up to {worst:e}"
    );
}

#[test]
fn minilm_matches_pytorch() {
    let Some(dir) = encoder_dir("all-MiniLM-L6-v2", "minilm") else {
        return;
    };
    matches_pytorch(&dir, include_str!("../fixtures/minilm_parity.json"));
}

#[test]
fn mpnet_matches_pytorch() {
    let Some(dir) = encoder_dir("all-mpnet-base-v2", "mpnet") else {
        return;
    };
    matches_pytorch(&dir, include_str!("../fixtures/mpnet_parity.json"));
}
