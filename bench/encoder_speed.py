"""PyTorch side of bench/encoder-speed.sh: sentence-transformers on CPU, same rows, batch 32.

    python encoder_speed.py ENCODER_DIR CSV ROWS MAX_LEN title|record

PRECISION=bf16 runs the model under torch.autocast("cpu", bfloat16), PyTorch's mixed precision.
"""
import contextlib
import csv
import os
import sys
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch  # noqa: E402
from sentence_transformers import SentenceTransformer  # noqa: E402

torch.set_num_threads(2)
enc_dir, path, rows, max_len, field = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
with open(path, newline="") as f:
    r = csv.DictReader(f)
    texts = []
    for i, row in enumerate(r):
        if i >= rows:
            break
        texts.append(row["job_title"] if field == "title" else row["job_title"] + ". " + row["duties_description"])
m = SentenceTransformer(enc_dir, device="cpu")
m.max_seq_length = max_len
precision = os.environ.get("PRECISION", "fp32")
mixed = (
    torch.autocast("cpu", dtype=torch.bfloat16)
    if precision == "bf16"
    else contextlib.nullcontext()
)
with mixed:
    m.encode(texts[:32], batch_size=32)
    t = time.time()
    v = m.encode(texts, batch_size=32, convert_to_numpy=True)
    s = time.time() - t
print(f"pytorch {torch.__version__} {precision} ({torch.get_num_threads()} threads): {len(texts)} rows ({field}) in {s:.2f}s = {len(texts) / s:.1f} rows/s, checksum {float(v.sum()):.4f}")
