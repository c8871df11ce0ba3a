#!/usr/bin/env bash
# Fuzz the readers of what Flick takes from anywhere — checkpoints, dataset files (GIF, PNG,
# captions.jsonl) and prompts — with cargo fuzz (libFuzzer; needs the nightly toolchain, which
# this script installs with cargo-fuzz if missing). Seeds are made by Flick itself: a one-step
# micro teacher's checkpoint, a generated GIF, a data-preview PNG, the configs' prompts.
#   bash scripts/fuzz.sh [SECONDS_PER_TARGET=600] [TARGET...]   (targets: checkpoint dataset prompt)
# Prints, per target, the executions, the corpus size and any crash (saved in fuzz/artifacts/;
# each one found becomes a regression test in tests/hostile.rs and its input goes to fuzz/seeds/).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
secs="${1:-600}"
shift || true
targets="${*:-checkpoint dataset prompt}"
rustup toolchain list | grep -q '^nightly' || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked

# Seeds, made by the stable build of Flick.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/flick-target}"
cargo build --workspace -q
flick="$CARGO_TARGET_DIR/debug/flick"
work="$HOME/.cache/flick-fuzz"
mkdir -p "$work/seeds"/{checkpoint,dataset,prompt}
if [ ! -f "$work/seeds/checkpoint/micro.safetensors" ]; then
  rm -rf "$work/micro"
  FLICK_MODELS="$root/models" "$flick" train-teacher --config fuzz/micro-teacher.toml --out "$work/micro" 2>/dev/null
  cp "$work/micro/teacher.safetensors" "$work/seeds/checkpoint/micro.safetensors"
  "$flick" generate --checkpoint "$work/micro/teacher.safetensors" --prompt "a red circle" --steps 1 \
    --out "$work/seeds/dataset/clip.gif" 2>/dev/null
  "$flick" data-preview --count 1 --out "$work/seeds/dataset/frame.png" 2>/dev/null
  printf '{"file": "a.gif", "caption": "a large red circle moving left on black"}\n' > "$work/seeds/dataset/captions.jsonl"
  grep -ho '"a [^"]*"' configs/*.toml | tr -d '"' | sort -u | head -50 |
    awk -v d="$work/seeds/prompt" '{ f = sprintf("%s/%03d.txt", d, NR); printf "%s", $0 > f; close(f) }'
fi

cd fuzz
export CARGO_TARGET_DIR="${FLICK_FUZZ_TARGET_DIR:-$HOME/.cache/flick-fuzz-target}"
cargo +nightly fuzz build -O -s none
for t in $targets; do
  mkdir -p "$work/corpus/$t"
  extra=()
  [ -d "seeds/$t" ] && extra+=("seeds/$t")
  log="$work/$t.log"
  set +e
  cargo +nightly fuzz run -O -s none "$t" "$work/corpus/$t" "$work/seeds/$t" "${extra[@]}" -- \
    -max_total_time="$secs" -max_len=262144 -rss_limit_mb=3072 -timeout=20 -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  corpus=$(ls "$work/corpus/$t" | wc -l)
  crashes=$(ls "artifacts/$t" 2>/dev/null | wc -l)
  echo "$t: ${runs:-?} executions in ${secs} s, corpus $corpus inputs, exit $rc, $crashes crash file(s) in fuzz/artifacts/$t"
done
