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
set -u
OUTDIR=${1:-/tmp/gpu-check}
CARRY=${2:-.devcarry}
mkdir -p "$OUTDIR"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if [ -d "$CARRY/whl" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
        "$CARRY"/whl/*.whl || exit 1
    export PYTHONPATH=/tmp/site
fi
export PYTHONPATH=$PWD/src:$PWD${PYTHONPATH:+:$PYTHONPATH}
export DPSYNTH_TEST_TOKENIZER=$(cd "$CARRY" && pwd)/smollm2-shape DPSYNTH_LEDGER=/tmp/gpu-check-ledger.sqlite
MODEL=/tmp/smollm2-shape-random
W=/tmp/gpu-check-run
rm -rf "$W"
# PARTS: which of tests, cli, train, generate to run (all by default); TESTS: the pytest arguments
# QUICK=1: a few steps and records of each part, no tests (checks this script itself on a CPU)
PARTS=" ${PARTS:-tests cli train generate} "
TESTS=${TESTS:-tests/train/test_private.py tests/train/test_fastpath.py tests/train/test_stage.py}
has() { case "$PARTS" in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
STEPS=20 RECORDS=128 TRAIN_STEPS=10 HF_RECORDS=${HF_RECORDS:-1000}
[ "${QUICK:-0}" = 1 ] && STEPS=2 RECORDS=4 TRAIN_STEPS=1 HF_RECORDS=4

python3 - "$CARRY/smollm2-shape" "$MODEL" <<'EOF' 2>&1 | tee "$OUTDIR/versions.txt"
import sys

import opacus, peft, torch, transformers
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

print("torch", torch.__version__, "transformers", transformers.__version__, "peft", peft.__version__,
      "opacus", opacus.__version__)
print("cuda", torch.cuda.is_available(), torch.cuda.get_device_name(0) if torch.cuda.is_available() else "-")
torch.manual_seed(0)
model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(sys.argv[1]), dtype=torch.float32)
model.save_pretrained(sys.argv[2])
AutoTokenizer.from_pretrained(sys.argv[1]).save_pretrained(sys.argv[2])
print("random SmolLM2-135M-shaped model:", sum(p.numel() for p in model.parameters()), "parameters")
EOF

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv 2>&1 | tee -a "$OUTDIR/versions.txt"
section() { echo; echo "=== $1 ($(date -u +%H:%M:%S))"; }

section "DP-SGD checks and the train stage on CUDA"
[ "${QUICK:-0}" = 1 ] || ! has tests || timeout 240 python3 -m pytest -q -rs -p no:cacheprovider $TESTS 2>&1 | tee "$OUTDIR/pytest.txt" | tail -40

section "CLI on CUDA: prepare -> train -> generate"
has cli && {
    set -x
    timeout 60 python3 -m dpsynth.cli prepare --out "$W" --quiet data.demo_records=400 &&
        timeout 150 python3 -m dpsynth.cli train --out "$W" --quiet "model.name=$MODEL" train.max_steps=$STEPS &&
        timeout 90 python3 -m dpsynth.cli generate --out "$W" --quiet generate.num_records=$RECORDS \
            generate.max_new_tokens=64 generate.batch_size=64
    set +x
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

section "bench_train on CUDA"
has train && timeout 200 python3 bench/bench_train.py --model "$MODEL" --batch 32 --tokens 128 --steps $TRAIN_STEPS \
    --modes no_dp,dp,ghost,dp_bf16,dp_prefix,no_dp_fast,dp_fast --json "$OUTDIR/bench_train.json" 2>&1 |
    tee "$OUTDIR/bench_train.txt" | tail -25

section "bench_generate on CUDA (HF generate)"
has generate && timeout 150 python3 bench/bench_generate.py --model "$MODEL" --engines hf,hf-bf16 --hf-records ${HF_RECORDS} --batch-size 128 \
    --new-tokens 128 --json "$OUTDIR/bench_generate.json" 2>&1 | tee "$OUTDIR/bench_generate.txt" | tail -15
section "done"
