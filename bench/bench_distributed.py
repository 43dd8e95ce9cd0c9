"""DP training in one process against torchrun ranks on the same machine, side by side in one run, at equal epsilon.

    python bench/bench_distributed.py                         # demo data, SmolLM2-135M, 8 DP steps per mode
    python bench/bench_distributed.py --steps 12 --json bench/results/distributed-DATE.json

Modes (each a fresh ``dpsynth train`` on a copy of the same prepared run, DP arm only, the same noise seed, so every
mode draws the same Poisson batches and the same noise):

- ``one_process``: one process with all the cores as torch threads (``OMP_NUM_THREADS`` = cores);
- ``torchrun``: ``torchrun --nproc_per_node N -m dpsynth train`` (gloo on CPU), one thread per rank;
- ``one_thread``: one process, one thread: what each rank has to itself.

Reported per mode: the median step time (``seconds`` of ``train_log.jsonl``, the first step left out as warm-up),
examples and tokens per second (the logged global batch times the run's mean example length), the whole command's
wall time, and the epsilon of its privacy.json, which must be the same in every mode.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))


def _run(mode: str, run_dir: Path, ranks: int, cores: int, ledger: Path) -> dict[str, float]:
    env = {**os.environ, "DPSYNTH_LEDGER": str(ledger), "PYTHONPATH": str(SRC)}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    train = ["-m", "dpsynth", "train", "--out", str(run_dir), "--quiet"]
    if mode == "torchrun":
        env["OMP_NUM_THREADS"] = "1"
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks), *train]
    else:
        env["OMP_NUM_THREADS"] = str(cores if mode == "one_process" else 1)
        cmd = [sys.executable, *train]
    start = time.perf_counter()
    done = subprocess.run(cmd, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{mode} failed:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    rows = [json.loads(x) for x in (run_dir / "dp" / "train_log.jsonl").read_text().splitlines()]
    steps = [r["seconds"] for r in rows[1:]] or [rows[0]["seconds"]]
    batch = statistics.mean(r["batch_size"] for r in rows)
    privacy = json.loads((run_dir / "dp" / "privacy.json").read_text())
    step_s = statistics.median(steps)
    return {
        "step_s": round(step_s, 3),
        "examples_per_s": round(batch / step_s, 2),
        "mean_batch": round(batch, 1),
        "wall_s": round(wall, 1),
        "epsilon": privacy["epsilon"],
        "processes": privacy.get("processes", 1),
        "steps": privacy["steps"],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None, help="YAML config (default: the demo data)")
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--modes", default="one_process,torchrun,one_thread")
    ap.add_argument("--json", default=None)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()

    from dpsynth import api
    from dpsynth.config import load_config
    from dpsynth.machine import usable_cores
    from dpsynth.models.loader import load_tokenizer
    from dpsynth.rundir import RunDir
    from dpsynth.train.stage import _examples_and_cells

    cores = usable_cores()
    fixed = ["train.arms=[dp]", f"train.max_steps={args.steps}", "train.noise_seed=7", "train.lora.dropout=0"]
    cfg = load_config(args.config, [*fixed, *args.overrides])
    results: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp) / "prepared"
        api.prepare(cfg, base)
        examples = _examples_and_cells(cfg, RunDir(base), load_tokenizer(cfg.model))[0]
        tokens = statistics.mean(len(e.input_ids) for e in examples)
        for mode in args.modes.split(","):
            run_dir = Path(tmp) / mode
            shutil.copytree(base, run_dir)
            results[mode] = _run(mode, run_dir, args.ranks, cores, Path(tmp) / f"ledger-{mode}.sqlite")
            results[mode]["tokens_per_s"] = round(results[mode]["examples_per_s"] * tokens, 1)
    ref = results.get("one_process")
    print(f"{cores} CPU cores; {len(examples)} training units, {tokens:.0f} tokens per example on average; DP arm")
    print("| mode | processes | step s | examples/s | tokens/s | vs one_process | epsilon | wall s |")
    print("|---|---|---|---|---|---|---|---|")
    for mode, r in results.items():
        ratio = f"{r['tokens_per_s'] / ref['tokens_per_s']:.2f}x" if ref else "-"
        print(
            f"| {mode} | {r['processes']} | {r['step_s']} | {r['examples_per_s']} | {r['tokens_per_s']} | {ratio} | "
            f"{r['epsilon']:.6f} | {r['wall_s']} |"
        )
    eps = [r["epsilon"] for r in results.values()]
    same = max(eps) - min(eps) <= 1e-9 * max(eps)
    print(f"epsilon equal in every mode (relative 1e-9): {same}")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        doc = {"command": " ".join(sys.argv), "cores": cores, "tokens_per_example": tokens, "modes": results}
        doc["epsilon_equal"] = same
        from dpsynth import machine

        doc["machine"] = machine.describe()
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
