"""Membership-inference scoring of a finished run, three ways side by side: each model whole and with shared bottom
blocks, both in float32, and shared bottom blocks in bfloat16 (bf16 weights under bf16 autocast).

The evaluate stage scores every sampled member and non-member under the reference model and each arm
(:mod:`dpsynth.evaluate.model_privacy`). This times the paths on the same units in one process and reports, against
the float32 whole-model path, the largest difference in a unit's loss, each attack's AUC and the correlation of the
reference-attack scores, so the saving and its cost in accuracy show together. ``shared_bottom_bf16`` is what
``evaluate.precision=auto`` runs where training runs under bf16 autocast (a CPU with native bf16, CUDA).

    python bench/bench_mia.py --run runs/demo --json bench/results/mia-demo.json

The run folder needs its data, its config and both arms' adapters (``dpsynth run`` leaves them); nothing in it is
changed. Prints a table and, with ``--json``, writes ``{"paths": {PATH: {"seconds", "auc", "loss_auc",
"max_loss_diff", "reference_score_corr"}}, "ratio", "max_loss_diff", "units"}`` (``ratio`` and ``max_loss_diff``:
whole against shared_bottom, both float32).
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
    from dpsynth.evaluate.mia import loss_attack, reference_attack
    from dpsynth.evaluate.model_privacy import UnitScorer, _mia_units, load_arms
    from dpsynth.models.loader import resolve_device
    from dpsynth.rundir import RunDir
    from dpsynth.train import warm_start
    from dpsynth.train.precision import autocast

    torch.set_grad_enabled(False)
    run = RunDir(args.run)
    cfg = load_config(args.run / "config.yaml")
    inputs = load_inputs(cfg, run)
    arms = inputs.model_arms
    reference, _ = warm_start.reference(run, arms)
    f32 = cfg.model.model_copy(update={"dtype": "float32"})
    bf16 = cfg.model.model_copy(update={"dtype": "bfloat16"})
    model, tokenizer = load_arms(cfg, run, arms, reference, f32)
    model_bf16, _ = load_arms(cfg, run, arms, reference, bf16)
    device = resolve_device(cfg.model.device)
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

    def shared_bf16() -> list[list[np.ndarray]]:
        with autocast(device, torch.bfloat16):
            return [s.losses_under(model_bf16, names) for s in scorers]

    def ref_scores(scores: list[list[np.ndarray]], k: int) -> np.ndarray:
        return np.concatenate([scores[0][0] - scores[0][k], scores[1][0] - scores[1][k]])

    def max_diff(a: list[list[np.ndarray]], b: list[list[np.ndarray]]) -> float:
        return max(float(np.abs(x - y).max()) for sa, sb in zip(a, b, strict=True) for x, y in zip(sa, sb, strict=True))

    results: dict[str, dict[str, object]] = {}
    losses = {}
    for path, fn in (("whole", whole), ("shared_bottom", shared), ("shared_bottom_bf16", shared_bf16)):
        start = time.perf_counter()
        scores = fn()
        seconds = time.perf_counter() - start
        losses[path] = scores
        auc = {
            arm: reference_attack(scores[0][k], scores[0][0], scores[1][k], scores[1][0])["auc"]
            for k, arm in enumerate(arms, start=1)
        }
        loss_auc = {arm: loss_attack(scores[0][k], scores[1][k])["auc"] for k, arm in enumerate(arms, start=1)}
        corr = {
            arm: round(float(np.corrcoef(ref_scores(scores, k), ref_scores(losses["whole"], k))[0, 1]), 6)
            for k, arm in enumerate(arms, start=1)
        }
        results[path] = {
            "seconds": round(seconds, 2),
            "auc": auc,
            "loss_auc": loss_auc,
            "max_loss_diff": max_diff(losses["whole"], scores),
            "reference_score_corr": corr,
        }
    diff = max_diff(losses["whole"], losses["shared_bottom"])
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
    print(f"{'path':<18} {'seconds':>8}  AUC per arm (reference / loss attack), score corr., max loss diff")
    for path, r in results.items():
        print(
            f"{path:<18} {r['seconds']:>8}  {r['auc']} / {r['loss_auc']}, {r['reference_score_corr']}, "
            f"{r['max_loss_diff']:.2e}"
        )
    print(f"whole / shared_bottom: {doc['ratio']}x; largest loss difference {diff:.2e} nats")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
