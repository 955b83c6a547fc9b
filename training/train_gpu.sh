#!/usr/bin/env bash
# The one prepared command for a GPU machine: trains the testbed's "main" model, then its "surrogate".
#
#   bash training/train_gpu.sh          # from the repository root; nothing needs installing
#
# Needs python3 with torch (CUDA), transformers, tokenizers, numpy, pillow and tqdm; SmoothGuard's other
# dependencies are not needed and the package is not installed (PYTHONPATH=core).
#
# Time (H100, 16 cores). reference/testbed.md measured about 36 ms per step of 128 examples for "main" (a step
# is ~8,600 small eager operations: dispatch-bound, so a step of 256 costs about the same):
#   preflight (20 steps, export, reload, eval)                              ~0.5 min
#   main:      1,200,000 examples, 9,375 steps of 128, at most MAIN_LIMIT_S (345 s) of training   ~6 min
#   surrogate: up to 1,200,000 examples in steps of 256 (lr 1.4e-3), in what is left of TESTBED_BUDGET_S
#              (540 s): about 2 min, about 1 M examples at 30 ms per step
# so the whole script ends within about 9 minutes (plus the machine's start). A --time-limit shortens a
# model's cosine schedule to fit (measured on its steps 30-230); metrics.json records it
# ("schedule": {"shortened": true}). MODELS=surrogate trains the surrogate alone, with the whole budget.
#
# Results, in $OUT (default ./testbed-out), few files so that a tool that brings back at most 8 files can:
#   main.tar, surrogate.tar   each holds <name>/: the fp16 model, tokenizer, processor, testbed.json, metrics.json
#                             -> tar -xf main.tar -C core/smoothguard/testbed/weights/
#   main-metrics.json, surrogate-metrics.json, train_gpu.log
# Run directories with checkpoints stay in $WORK (default /tmp/smoothguard-testbed).
#
# Environment: OUT, WORK, PYTHON (default python3), WORKERS (data processes per run; default cores - 2, <= 14),
# MODELS (default "main surrogate"), TESTBED_BUDGET_S, MAIN_LIMIT_S, MAIN_EXAMPLES, SURROGATE_EXAMPLES,
# SURROGATE_BATCH, SURROGATE_LR, PREFLIGHT_EXAMPLES, EVAL_EXAMPLES (held-out examples per question kind, 300),
# SKIP_PREFLIGHT=1, DEVICE (default cuda; DEVICE=cpu with tiny *_EXAMPLES rehearses the script), MAIN_INIT (weights to
# start main from, a fresh schedule: e.g. training/main, the unfinished CPU run).
set -u -o pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT" || exit 1
OUT="${OUT:-$ROOT/testbed-out}"
WORK="${WORK:-/tmp/smoothguard-testbed}"
PYTHON="${PYTHON:-python3}"
DEVICE="${DEVICE:-cuda}"
BUDGET="${TESTBED_BUDGET_S:-540}"
MODELS="${MODELS:-main surrogate}"
MAIN_LIMIT="${MAIN_LIMIT_S:-345}"
MAIN_EXAMPLES="${MAIN_EXAMPLES:-1200000}"
SURROGATE_EXAMPLES="${SURROGATE_EXAMPLES:-1200000}"
SURROGATE_BATCH="${SURROGATE_BATCH:-256}"
SURROGATE_LR="${SURROGATE_LR:-1.4e-3}"
PREFLIGHT_EXAMPLES="${PREFLIGHT_EXAMPLES:-2560}"
EVAL_EXAMPLES="${EVAL_EXAMPLES:-300}"
CORES="$(nproc 2>/dev/null || echo 4)"
WORKERS="${WORKERS:-$(( CORES - 2 > 14 ? 14 : (CORES - 2 < 1 ? 1 : CORES - 2) ))}"
mkdir -p "$OUT" "$WORK"
LOG="$OUT/train_gpu.log"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
SECONDS=0

say() { echo "[train_gpu $(printf '%4d' "$SECONDS")s] $*" | tee -a "$LOG"; }

say "repo $ROOT -> $OUT; work $WORK; $CORES cores, $WORKERS data workers per run; budget ${BUDGET}s"
DEVICE="$DEVICE" "$PYTHON" - <<'EOF' 2>&1 | tee -a "$LOG"
import platform, torch, transformers, tokenizers, numpy, PIL
print("python", platform.python_version(), "torch", torch.__version__, "transformers", transformers.__version__,
      "tokenizers", tokenizers.__version__, "numpy", numpy.__version__, "pillow", PIL.__version__)
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name() if torch.cuda.is_available() else "-")
import os
assert torch.cuda.is_available() or os.environ["DEVICE"] != "cuda", "no CUDA device"
EOF
[ "${PIPESTATUS[0]}" -eq 0 ] || { say "FAILED: no usable torch/CUDA"; exit 1; }
df -h /dev/shm 2>/dev/null | tail -1 | sed 's/^/shared memory: /' | tee -a "$LOG"   # the data workers' batches go through it

# The package is not installed there: import it from core/. Should smoothguard/__init__ need a dependency that
# is missing there, fall back to a stand-in top package whose only content is the path to core/smoothguard.
export PYTHONPATH="$ROOT/core"
if ! "$PYTHON" "$ROOT/training/train.py" --help >>"$LOG" 2>&1; then
    mkdir -p "$WORK/shim/smoothguard"
    printf '__path__ = [%s]\n' "'$ROOT/core/smoothguard'" >"$WORK/shim/smoothguard/__init__.py"
    export PYTHONPATH="$WORK/shim"
    say "import smoothguard failed (see log); using the stand-in package in $WORK/shim"
    "$PYTHON" "$ROOT/training/train.py" --help >>"$LOG" 2>&1 || { say "FAILED: cannot import the trainer"; exit 1; }
fi

train() {  # name, then extra flags
    local name="$1"; shift
    "$PYTHON" "$ROOT/training/train.py" --config "$name" --device "$DEVICE" --workers "$WORKERS" \
        --out "$WORK/$name" --log-every 250 --eval-examples "$EVAL_EXAMPLES" --no-progress "$@" 2>&1 \
        | grep --line-buffered -v -e "Loading weights" -e "Writing model shards" | tee -a "$LOG"
    return "${PIPESTATUS[0]}"
}

if [ "${SKIP_PREFLIGHT:-0}" != 1 ]; then
    say "preflight: $(( (PREFLIGHT_EXAMPLES + 127) / 128 )) steps of main, export, reload, eval"
    rm -rf "$WORK/preflight"
    if ! train main --batch-size 128 --examples "$PREFLIGHT_EXAMPLES" --eval-examples 8 --out "$WORK/preflight" \
        --log-every 10; then
        say "FAILED: preflight"; exit 1
    fi
fi

main_rc=skipped
if [[ " $MODELS " == *" main "* ]]; then
    say "main: $MAIN_EXAMPLES examples, at most ${MAIN_LIMIT}s of training"
    rm -rf "$WORK/main"
    train main --seed 0 --batch-size 128 --examples "$MAIN_EXAMPLES" --time-limit "$MAIN_LIMIT" \
        ${MAIN_INIT:+--init-from "$MAIN_INIT"}
    main_rc=$?
    say "main finished with code $main_rc"
fi

surrogate_rc=skipped
left=$(( BUDGET - SECONDS - 30 ))
if [[ " $MODELS " == *" surrogate "* ]] && [ "$left" -ge 60 ]; then
    say "surrogate: $SURROGATE_EXAMPLES examples, at most ${left}s of training"
    rm -rf "$WORK/surrogate"
    train surrogate --seed 1 --batch-size "$SURROGATE_BATCH" --lr "$SURROGATE_LR" --examples "$SURROGATE_EXAMPLES" \
        --time-limit "$left"
    surrogate_rc=$?
    say "surrogate finished with code $surrogate_rc"
elif [[ " $MODELS " == *" surrogate "* ]]; then
    say "surrogate skipped: only ${left}s left"
fi

for name in main surrogate; do
    if [ -f "$WORK/$name/model/model.safetensors" ]; then
        rm -rf "$WORK/pack/$name"; mkdir -p "$WORK/pack"
        cp -r "$WORK/$name/model" "$WORK/pack/$name"
        tar -cf "$OUT/$name.tar" -C "$WORK/pack" "$name"
        cp "$WORK/$name/metrics.json" "$OUT/$name-metrics.json"
        say "$name -> $OUT/$name.tar ($(du -k "$OUT/$name.tar" | cut -f1) kB)"
    fi
done
say "done: main $main_rc, surrogate $surrogate_rc, ${SECONDS}s in all"
[ "$main_rc" != 0 ] && [ "$main_rc" != skipped ] && exit 1
[ "$surrogate_rc" = 0 ] || [ "$surrogate_rc" = skipped ]
