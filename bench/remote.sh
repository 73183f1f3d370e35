#!/usr/bin/env bash
# Beyond one machine, against a local S3-compatible server (moto, Python registry):
#  1. push of the 150k ensemble store (bench/out/store-trained, made by bench/trained-encoder.sh
#     or any 150k ensemble run) to an empty remote, then pull into an empty store;
#  2. a second machine: two fresh clones of the project, each with an empty store; the first
#     runs pipelines/full.toml with --remote, the second then restores every stage from it;
#  3. the ensemble coding the 150k records as one process and as 4 shards run at once, merged,
#     compared byte for byte (no shared embedding cache on either side).
# Commit first: the clones take HEAD.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q
BIN=$PWD/target/release/isco-dag
STORE=${STORE:-bench/out/store-trained}
MODEL=${MODEL:-bench/out/frozen/train/model}
DATA=../shared/data/records_150k.csv
PORT=${PORT:-5077}
[ -d "$STORE" ] && [ -f "$MODEL/model.json" ] || {
  echo "needs $STORE and $MODEL: run bash bench/trained-encoder.sh first" >&2
  exit 1
}
python3 -c "import moto.server, flask" 2> /dev/null || python3 -m pip install -q 'moto[server]'
mkdir -p bench/out
python3 -m moto.server -H 127.0.0.1 -p "$PORT" > bench/out/moto.log 2>&1 &
MOTO=$!
trap 'kill $MOTO' EXIT
until curl -sf "http://127.0.0.1:$PORT/" > /dev/null; do sleep 0.2; done
export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT
unset ISCO_DAG_REMOTE
curl -sf -X PUT "$AWS_ENDPOINT_URL/bench" > /dev/null
t() { /usr/bin/time -f "%e s wall, peak RSS %M KB" "$@"; }

echo "== 1. push and pull of the 150k ensemble store ($(du -sh --apparent-size "$STORE/objects" | cut -f1) of objects)"
t $BIN push --store "$STORE" --remote s3://bench/150k
rm -rf bench/out/store-pulled
t $BIN pull --store bench/out/store-pulled --remote s3://bench/150k
$BIN verify --store bench/out/store-pulled | tail -1

echo "== 2. a second machine: fresh clone, empty store, the same remote"
rm -rf bench/out/machine-a bench/out/machine-b
git clone -q . bench/out/machine-a
git clone -q . bench/out/machine-b
(cd bench/out/machine-a && t $BIN run pipelines/full.toml --remote s3://bench/full | tail -2)
(cd bench/out/machine-b && t $BIN run pipelines/full.toml --remote s3://bench/full | tail -2)
cmp bench/out/machine-a/data/processed/predictions.csv bench/out/machine-b/data/processed/predictions.csv &&
  echo "second machine: predictions identical"

echo "== 3. the ensemble on $DATA: one process against 4 shards at once"
rm -rf bench/out/shards && mkdir -p bench/out/shards
# --store points nowhere: neither side reads or fills a shared embedding cache.
t $BIN predict --model "$MODEL" --store bench/out/shards/none --input "$DATA" \
  --output bench/out/shards/one.csv
start=$(date +%s.%N)
pids=()
for i in 0 1 2 3; do
  $BIN predict --model "$MODEL" --store bench/out/shards/none --input "$DATA" \
    --shard "$i/4" --output "bench/out/shards/part-$i.csv" 2> "bench/out/shards/part-$i.log" &
  pids+=($!)
done
wait "${pids[@]}"
$BIN predict merge --output bench/out/shards/merged.csv bench/out/shards/part-*.csv
end=$(date +%s.%N)
tail -qn1 bench/out/shards/part-*.log
echo "4 shards + merge: $(echo "$end - $start" | bc) s wall"
cmp bench/out/shards/one.csv bench/out/shards/merged.csv && echo "merged output identical to one process"
