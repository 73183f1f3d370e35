//! The burn port of BERT against PyTorch: embeddings of the real all-MiniLM-L6-v2 must match
//! sentence-transformers' within 1e-4 (numbers in tests/fixtures/minilm_parity.json, made by
//! bench/encoder_parity.py). Needs `isco-dag models fetch minilm`; CI fetches it and sets
//! ISCO_DAG_REQUIRE_ENCODER=1 so a missing encoder fails instead of skipping.

use std::path::PathBuf;

use serde_json::Value;

fn encoder_dir() -> Option<PathBuf> {
    let dir = std::env::var_os("ISCO_DAG_ENCODER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/pretrained/all-MiniLM-L6-v2")
        });
    if dir.join("model.safetensors").is_file() {
        return Some(dir);
    }
    assert!(
        std::env::var("ISCO_DAG_REQUIRE_ENCODER").as_deref() != Ok("1"),
        "ISCO_DAG_REQUIRE_ENCODER=1 but {} has no encoder; run `isco-dag models fetch minilm`",
        dir.display()
    );
    eprintln!(
        "skipping: no encoder in {} (run `isco-dag models fetch minilm`)",
        dir.display()
    );
    None
}

#[test]
fn minilm_matches_pytorch() {
    let Some(dir) = encoder_dir() else { return };
    let fixture: Value = serde_json::from_str(include_str!("../fixtures/minilm_parity.json"))
        .expect("fixture is JSON");
    let sentences: Vec<&str> = fixture["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let enc = classifier::encoder::Encoder::load(&dir, 128).unwrap();
    // Mixed lengths in one batch: padding must not leak into any row.
    let got = enc.embed(&sentences, 4, false, &|_| {}).unwrap();
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
