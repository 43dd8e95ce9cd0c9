#!/usr/bin/env bash
# The CUDA checks, in one short run on a lent GPU machine (the device tool's H200; any CUDA machine will do):
#   1. the DP-SGD checks on CUDA (per-sample gradients against a per-example loop, bf16 bounds, clipping, noise, the
#      prefix cache: the `device`-parametrised tests) and the train stage end to end (tests/train/test_stage.py);
#   2. the CLI on CUDA: prepare (demo data) -> train -> generate on a SmolLM2-135M-shaped model;
#   3. bench_train.py and bench_generate.py (HF generate, float32 and bf16) on that model.
# The model has SmolLM2-135M's config and tokenizer but random weights: the 98 MB GGUF cannot travel (the device tool
# carries 64 MiB), and speed does not depend on the weights' values. Random weights never write end-of-turn, so
# every generated record runs to --new-tokens: the generation figures are an upper bound on a real run's records.
#
#   bash bench/gpu_check.sh OUTDIR [CARRY]
# CARRY (default .devcarry) may hold whl/*.whl (packages the machine lacks: opacus, pydantic, peft, faker, ...) and
# smollm2-shape/ (config.json and tokenizer files of SmolLM2-135M-Instruct, made from the converted GGUF's cache).
set -u -o pipefail
OUTDIR=${1:-/tmp/gpu-check}
CARRY=${2:-.devcarry}
mkdir -p "$OUTDIR"
[ -d "$CARRY/smollm2-shape" ] || { echo "no $CARRY/smollm2-shape (the model's config and tokenizer)" >&2; exit 2; }
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ -d "$CARRY/whl" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$CARRY"/whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}
DPSYNTH_TEST_TOKENIZER=$(cd "$CARRY/smollm2-shape" && pwd) || exit 2
export DPSYNTH_TEST_TOKENIZER DPSYNTH_LEDGER=/tmp/gpu-check-ledger.sqlite
MODEL=/tmp/smollm2-shape-random
W=/tmp/gpu-check-run
rm -rf "$W"
# PARTS: which of tests, cli, train, generate to run (all by default); TESTS: the pytest arguments (word-split)
# QUICK=1: a few steps and records of each part, no tests, no CUDA needed (checks this script itself on a CPU)
PARTS=" ${PARTS:-tests cli train generate} "
# (the layout test runs the evaluate stage, whose 88 MB embedding model does not travel: deselected by default)
TESTS=${TESTS:-tests/train/test_private.py tests/train/test_fastpath.py tests/train/test_stage.py
    --deselect tests/train/test_stage.py::test_pipeline_writes_the_documented_layout}
has() { case "$PARTS" in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
STEPS=20 RECORDS=128 TRAIN_STEPS=10 HF_RECORDS=${HF_RECORDS:-1000} BATCH=32 TOKENS=128
TRAIN_MODES=no_dp,dp,ghost,dp_bf16,dp_prefix,no_dp_fast,dp_fast
if [ "${QUICK:-0}" = 1 ]; then
    STEPS=2 RECORDS=4 TRAIN_STEPS=1 HF_RECORDS=4 BATCH=2 TOKENS=16 TRAIN_MODES=no_dp,dp_fast
fi
LOG=$OUTDIR/status.txt
: >"$LOG"
section() { echo; echo "=== $1 ($(date -u +%H:%M:%S))" | tee -a "$LOG"; }
# record() NAME STATUS: each part's exit status in status.txt; the script exits 1 when any part failed
FAILED=0
record() { echo "$1: exit $2 ($(date -u +%H:%M:%S))" | tee -a "$LOG"; [ "$2" = 0 ] || FAILED=1; }

python3 - "$CARRY/smollm2-shape" "$MODEL" "${QUICK:-0}" <<'EOF' 2>&1 | tee "$OUTDIR/versions.txt"
import sys

import opacus, peft, torch, transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__,
      "opacus", opacus.__version__)
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
if not torch.cuda.is_available() and sys.argv[3] != "1":
    sys.exit("no CUDA device: every check would skip or run on the CPU (QUICK=1 checks the script on a CPU)")
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(sys.argv[1]), dtype=torch.float32)
model.save_pretrained(sys.argv[2])
AutoTokenizer.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2])
print("random SmolLM2-135M-shaped model:", sum(p.numel() for p in model.parameters()), "parameters")
EOF
record setup $? && [ "$FAILED" = 0 ] || exit 1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee -a "$OUTDIR/versions.txt"

if [ "${QUICK:-0}" != 1 ] && has tests; then
    section "DP-SGD checks and the train stage on CUDA"
    # shellcheck disable=SC2086  # TESTS is a list of pytest arguments
    timeout 240 python3 -m pytest -q -ra -p no:cacheprovider $TESTS 2>&1 | tee "$OUTDIR/pytest.txt" | tail -40
    record tests $?
fi

if has cli; then
    section "CLI on CUDA: prepare -> train -> generate"
    {
        set -x
        timeout 60 python3 -m dpsynth.cli prepare --out "$W" --quiet data.demo_records=400 &&
            timeout 150 python3 -m dpsynth.cli train --out "$W" --quiet "model.name=$MODEL" train.max_steps=$STEPS &&
            timeout 90 python3 -m dpsynth.cli generate --out "$W" --quiet generate.num_records=$RECORDS \
                generate.max_new_tokens=64 generate.batch_size=64 &&
            { set +x; } 2>/dev/null &&
            python3 - "$W" <<'EOF'
import json, statistics, sys
from pathlib import Path

from dpsynth.rundir import RunDir, read_json, read_jsonl

run = RunDir(Path(sys.argv[1]))
for arm in ("dp", "no_dp"):
    p = read_json(run.privacy_json(arm))
    steps = [r for r in read_jsonl(run.train_log(arm)) if "seconds" in r]
    rows = read_jsonl(run.generated(arm)) if run.generated(arm).is_file() else []
    print(arm, json.dumps({k: p.get(k) for k in ("epsilon", "steps", "sample_rate", "noise_multiplier")}),
          f"steps logged {len(steps)}, median step {statistics.median(r['seconds'] for r in steps):.3f} s,",
          f"generated records {len(rows)}, mean chars {statistics.mean(len(r['text']) for r in rows):.0f}")
EOF
    } 2>&1 | tee "$OUTDIR/cli.txt" | tail -30
    record cli $?
fi

if has train; then
    section "bench_train on CUDA"
    timeout 200 python3 bench/bench_train.py --model "$MODEL" --batch $BATCH --tokens $TOKENS --steps $TRAIN_STEPS \
        --modes $TRAIN_MODES --json "$OUTDIR/bench_train.json" 2>&1 |
        tee "$OUTDIR/bench_train.txt" | tail -25
    record bench_train $?
fi

if has generate; then
    section "bench_generate on CUDA (HF generate)"
    timeout 150 python3 bench/bench_generate.py --model "$MODEL" --engines hf,hf-bf16 --hf-records $HF_RECORDS \
        --batch-size 128 --new-tokens 128 --json "$OUTDIR/bench_generate.json" 2>&1 |
        tee "$OUTDIR/bench_generate.txt" | tail -15
    record bench_generate $?
fi
section "done"
cat "$LOG"
exit $FAILED
