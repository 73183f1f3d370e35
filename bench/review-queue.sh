#!/usr/bin/env bash
# The review page's queue and decisions when queues have accumulated: a demo project whose
# `data/review/` holds ROWS queued records (the first ROWS of ../shared/data/records_150k.csv,
# coded by the demo model; a year of monthly queues is of this order) and whose
# `data/corrections/` holds 10,000 earlier decisions. For this build and a baseline binary
# (BASE_BIN, e.g. a build of the previous commit), one after the other on the same files:
# `serve`, then REQS pages of `GET /review/queue?limit=20` and REQS decisions, one at a time;
# prints the median and slowest time of each.
#   BASE_BIN=/tmp/isco-dag-base bash bench/review-queue.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-target/release/isco-dag}
ROWS=${ROWS:-100000}
REQS=${REQS:-20}
DATA=../shared/data/records_150k.csv
[ -f "$DATA" ] || { echo "needs $DATA" >&2; exit 1; }
cargo build --release --quiet --bin isco-dag
BIN=$(realpath "$BIN")
[ -n "${BASE_BIN:-}" ] && BASE_BIN=$(realpath "$BASE_BIN")
P=bench/out/review-queue
rm -rf "$P" && mkdir -p "$P"
cp -r pipelines config "$P/"
(cd "$P" && "$BIN" demo --dir data > /dev/null && "$BIN" run pipelines/full.toml > /dev/null 2>&1)
mkdir -p "$P/data/corrections" "$P/data/review"
python3 - "$DATA" "$P" "$ROWS" <<'EOF'
import csv, sys
data, project, rows = sys.argv[1], sys.argv[2], int(sys.argv[3])
with open(data, newline="") as f, open(f"{project}/jobs.csv", "w", newline="") as out:
    r, w = csv.DictReader(f), csv.writer(out)
    w.writerow(["job_title", "duties_description"])
    for i, row in zip(range(rows), r):
        w.writerow([row["job_title"], row["duties_description"]])
# Earlier decisions (their items are not in the queue: parsed, never matched).
with open(f"{project}/data/corrections/review_20260101.csv", "w", newline="") as out:
    w = csv.writer(out)
    w.writerow(["job_title", "duties_description", "corrected_isco_code", "coder", "timestamp",
                "note", "predicted_isco_code", "predicted_confidence", "review_item"])
    for i in range(10000):
        w.writerow([f"title {i}", "", "5120", "c", "2026-01-01T00:00:00Z", "", "5120", "0.5",
                    f"{i:016x}"])
EOF
(cd "$P" && "$BIN" predict --input jobs.csv --output data/review/to_review_20260101.csv > /dev/null 2>&1)
echo "queue: $(($(wc -l < "$P/data/review/to_review_20260101.csv") - 1)) rows; decisions: 10000 rows"
measure() { # label binary
  local port=18$((RANDOM % 900 + 100))
  (cd "$P" && ISCO_DAG_API_TOKEN=bench "$2" serve --addr "127.0.0.1:$port" > /dev/null 2>&1) &
  local pid=$!
  for _ in $(seq 100); do curl -sf "localhost:$port/health" > /dev/null && break; sleep 0.2; done
  python3 - "$1" "$port" "$REQS" <<'EOF'
import json, statistics, sys, time, urllib.request
label, port, reqs = sys.argv[1], sys.argv[2], int(sys.argv[3])
base = f"http://127.0.0.1:{port}"
def timed(req):
    t = time.perf_counter()
    with urllib.request.urlopen(req) as r:
        body = r.read()
    return (time.perf_counter() - t) * 1000, body
pages = [timed(f"{base}/review/queue?limit=20") for _ in range(reqs)]
items = json.loads(pages[-1][1])["items"]
decisions = []
for item in items[:reqs]:
    body = json.dumps({"item_id": item["id"], "isco_code": "5120", "coder": "bench"}).encode()
    req = urllib.request.Request(f"{base}/review/decision", data=body, method="POST",
        headers={"content-type": "application/json", "authorization": "Bearer bench"})
    decisions.append(timed(req))
for what, ts in (("queue page", pages), ("decision", decisions)):
    ms = [t for t, _ in ts]
    print(f"{label}: {what}: first {ms[0]:.1f} ms, median {statistics.median(ms):.1f} ms, "
          f"slowest {max(ms):.1f} ms ({len(ms)} requests)")
EOF
  kill "$pid"; wait "$pid" 2> /dev/null || true
  # The next binary starts from the same decisions.
  sed -i '/,bench,/d' "$P"/data/corrections/review_*.csv
}
measure new "$BIN"
[ -n "${BASE_BIN:-}" ] && measure base "$BASE_BIN"
exit 0
