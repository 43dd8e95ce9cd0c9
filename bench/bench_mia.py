"""Membership-inference scoring of a finished run, two ways side by side: each model whole, and shared bottom blocks.

The evaluate stage scores every sampled member and non-member under the reference model and each arm
(:mod:`dpsynth.evaluate.model_privacy`). This times both paths on the same units in one process and reports the
largest difference in a unit's loss and in each attack's AUC, so the saving and its cost in accuracy show together.

    python bench/bench_mia.py --run runs/demo --json bench/results/mia-demo.json

The run folder needs its data, its config and both arms' adapters (``dpsynth run`` leaves them); nothing in it is
changed. Prints a table and, with ``--json``, writes ``{"paths": {PATH: {"seconds", "auc"}}, "ratio",
"max_loss_diff", "units"}``.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a finished run folder (dpsynth run --out)")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from dpsynth import machine
    from dpsynth.config import load_config
    from dpsynth.evaluate.adapter_nll import active_adapter
    from dpsynth.evaluate.collect import load_inputs
    from dpsynth.evaluate.mia import reference_attack
    from dpsynth.evaluate.model_privacy import UnitScorer, _mia_units, load_arms
    from dpsynth.rundir import RunDir
    from dpsynth.train import warm_start

    torch.set_grad_enabled(False)
    run = RunDir(args.run)
    cfg = load_config(args.run / "config.yaml")
    inputs = load_inputs(cfg, run)
    arms = inputs.model_arms
    reference, _ = warm_start.reference(run, arms)
    model, tokenizer = load_arms(cfg, run, arms, reference)
    members, nonmembers = _mia_units(inputs, cfg.evaluate.mia_max_records, cfg.evaluate.seed)
    scorers = [UnitScorer(tokenizer, u, inputs.info, cfg.evaluate.score_batch_tokens) for u in (members, nonmembers)]
    names = [None if reference is None else "public_warm_start", *arms]

    def whole() -> list[list[np.ndarray]]:
        out = []
        for s in scorers:
            per = []
            for name in names:
                with active_adapter(model, name) as m:
                    per.append(s.losses(m))
            out.append(per)
        return out

    def shared() -> list[list[np.ndarray]]:
        return [s.losses_under(model, names) for s in scorers]

    results: dict[str, dict[str, object]] = {}
    losses = {}
    for path, fn in (("whole", whole), ("shared_bottom", shared)):
        start = time.perf_counter()
        scores = fn()
        seconds = time.perf_counter() - start
        losses[path] = scores
        auc = {
            arm: reference_attack(scores[0][k], scores[0][0], scores[1][k], scores[1][0])["auc"]
            for k, arm in enumerate(arms, start=1)
        }
        results[path] = {"seconds": round(seconds, 2), "auc": auc}
    diff = max(
        float(np.abs(a - b).max())
        for sa, sb in zip(losses["whole"], losses["shared_bottom"], strict=True)
        for a, b in zip(sa, sb, strict=True)
    )
    whole_s = float(results["whole"]["seconds"])  # type: ignore[arg-type]
    shared_s = float(results["shared_bottom"]["seconds"])  # type: ignore[arg-type]
    doc = {
        "paths": results,
        "ratio": round(whole_s / shared_s, 2),
        "max_loss_diff": diff,
        "units": {"members": len(members), "nonmembers": len(nonmembers), "models": names},
        "torch_threads": torch.get_num_threads(),
        "machine": machine.describe(),
    }
    print(f"{'path':<14} {'seconds':>8}  reference-attack AUC per arm")
    for path, r in results.items():
        print(f"{path:<14} {r['seconds']:>8}  {r['auc']}")
    print(f"whole / shared_bottom: {doc['ratio']}x; largest loss difference {diff:.2e} nats")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
