"""Signal against noise of one DP-SGD step, measured on PUBLIC proxy data: which batch size, n and adapter size
give DP fine-tuning a gradient it can follow.

Why: at the frontiers' scale (about 1,200 units, batch 32) the DP arm's loss did not move (bench/results/
frontier-yelp/2026-12-01-reduced). The arithmetic of DP-SGD says why, and this script measures it instead of
guessing. The update of a
step is the mean clipped gradient of the batch plus Gaussian noise of norm ``sigma * C * sqrt(d) / B`` (``d``
trainable parameters, ``B`` the expected batch, ``sigma`` calibrated for the target epsilon from the sample rate
``B / n`` and the number of steps). The *signal* is the expected clipped per-example gradient ``mu``: its norm is
estimated here without bias from ``m`` per-example gradients of the public proxy (computed one example at a time,
plain autograd: the same per-example quantity that Opacus clips), at the adapter's initialisation, or with
``train.init_adapter`` set at the public warm start the DP arm starts from. A table splits the unclipped gradient by
module and LoRA factor: each part's share of the squared norm and its coherence (|mean| / rms norm: 1 when every
example points the same way), to see where the signal sits.

For each (n, B) the script prints ``sigma``, the steps of ``--epochs`` epochs, and

* ``snr_step = |mu| / noise``: how much of one update is signal;
* ``snr_run = snr_step * sqrt(steps)``: the same over the whole run if the gradient kept its direction (signal adds
  linearly over steps, noise as the square root): an optimistic bound, for ranking settings, not a prediction.

Choosing the recipe from this reads only public data (the proxy's gradients) and public quantities (n, B, epsilon).

    OMP_NUM_THREADS=1 python bench/dp_snr.py --config bench/proxy_electronics.yaml --examples 128 --n 1200,5000 \\
        --batch 32,128,256,512 --clip 0.02,0.05,0.1,0.2,0.5,1.0 \\
        --json bench/results/dp-snr/electronics-top8-r8.json train.lora.top_k_layers=8
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def per_example_gradients(cfg, run, m: int):  # type: ignore[no-untyped-def]
    """``m`` per-example gradients of the trainable (LoRA) weights, ``[m, d]``, one backward pass each."""
    import torch

    from dpsynth.models.loader import load_model, load_tokenizer
    from dpsynth.train.batching import Collator
    from dpsynth.train.forward import TrainForward
    from dpsynth.train.lora import add_lora, load_init_adapter, trainable_parameters
    from dpsynth.train.stage import _examples_and_cells

    tok = load_tokenizer(cfg.model)
    model = add_lora(load_model(cfg.model, device=torch.device("cpu")), cfg.train.lora, seed=cfg.train.seed)
    if cfg.train.init_adapter is not None:  # measure where the DP arm starts: the public warm start's weights
        load_init_adapter(model, cfg.train.init_adapter)
    named = trainable_parameters(model)
    params = list(named.values())
    examples = _examples_and_cells(cfg, run, tok)[0][:m]
    collate, fwd = Collator(pad_id=int(tok.pad_token_id)), TrainForward(model, torch.device("cpu"))
    grads = []
    for e in examples:
        model.zero_grad(set_to_none=True)
        fwd.losses(collate([e])).sum().backward()
        grads.append(torch.cat([p.grad.reshape(-1) if p.grad is not None else torch.zeros(p.numel()) for p in params]))
    groups: dict[str, list[int]] = {}  # coordinates of each module kind and LoRA factor, e.g. "v_proj.lora_B"
    at = 0
    for name, p in named.items():
        parts = name.split(".")
        kind = next((parts[i - 1] + "." + x for i, x in enumerate(parts) if x.startswith("lora_")), "other")
        groups.setdefault(kind, []).extend(range(at, at + p.numel()))
        at += p.numel()
    return torch.stack(grads).double(), groups


def clipped_signal(raw, c: float) -> dict[str, float]:  # type: ignore[no-untyped-def]
    """Norm of the expected gradient clipped to ``c`` (an unbiased estimate from the rows of ``raw``)."""
    norms = raw.norm(dim=1)
    g = raw * (c / norms.clamp_min(1e-12)).clamp(max=1.0)[:, None]
    mean = g.mean(0)
    spread = float(((g - mean) ** 2).sum()) / (len(g) - 1)  # trace of the clipped gradients' covariance
    mu2 = float(mean @ mean) - spread / len(g)
    return {"clip": c, "mu_norm": math.sqrt(max(mu2, 0.0)), "clipped_share": float((norms > c).double().mean())}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=None, help="YAML config of the PUBLIC proxy data set (default: the demo data)")
    ap.add_argument("--n", default="1200,5000", help="private units to plan for (comma-separated)")
    ap.add_argument("--batch", default="32,128,512", help="expected batch sizes (comma-separated)")
    ap.add_argument("--clip", default="0.05,0.1,0.2,0.5,1.0", help="clipping norms C (comma-separated)")
    ap.add_argument("--eps", type=float, default=4.0)
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--examples", type=int, default=128, help="m: per-example gradients measured")
    ap.add_argument("--json", default=None)
    ap.add_argument("overrides", nargs="*", help="key=value overrides (e.g. train.lora.top_k_layers=8)")
    args = ap.parse_args()

    from dpsynth import api
    from dpsynth.config import load_config
    from dpsynth.rundir import RunDir
    from dpsynth.train.plan import make_plan

    cfg = load_config(args.config, [*args.overrides, f"privacy.target_epsilon={args.eps}"])
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        api.prepare(cfg, tmp)
        raw, groups = per_example_gradients(cfg, RunDir(Path(tmp)), args.examples)
    seconds = round(time.perf_counter() - start, 1)
    d, norms = raw.shape[1], raw.norm(dim=1)
    signals = [clipped_signal(raw, float(c)) for c in args.clip.split(",")]
    rows = []
    for n in (int(x) for x in args.n.split(",")):
        for b in (int(x) for x in args.batch.split(",")):
            if b >= n:
                continue
            over = [f"train.batch_size={b}", f"train.epochs={args.epochs}", f"privacy.target_epsilon={args.eps}"]
            plan = make_plan(load_config(args.config, [*args.overrides, *over]), n=n, histogram_cells=50)
            for sig in signals:
                noise = plan.noise_multiplier * sig["clip"] * math.sqrt(d) / b
                snr = sig["mu_norm"] / noise
                rows.append(
                    {
                        "n": n,
                        "batch": b,
                        "clip": sig["clip"],
                        "steps": plan.steps,
                        "sigma": round(plan.noise_multiplier, 3),
                        "clipped_share": round(sig["clipped_share"], 3),
                        "mu_norm": round(sig["mu_norm"], 5),
                        "noise_norm": round(noise, 4),
                        "snr_step": round(snr, 4),
                        "snr_run": round(snr * math.sqrt(plan.steps), 3),
                    }
                )
    print(f"config {args.config} {' '.join(args.overrides)}; eps {args.eps}, {args.epochs} epoch(s)")
    print(
        f"d = {d:,} trainable; per-example gradient norm (unclipped) median {float(norms.median()):.4f}, "
        f"10%-90% {float(norms.quantile(0.1)):.4f}-{float(norms.quantile(0.9)):.4f}; m = {len(raw)}; {seconds} s"
    )
    # where the signal sits: each group's share of the coordinates, of the squared per-example norm, and its own
    # signal-to-spread ratio (|mean| over the root-mean-square per-example norm, unclipped; 1 = every example agrees)
    by_group = {}
    for kind, idx in sorted(groups.items()):
        g = raw[:, idx]
        rms = float((g**2).sum(1).mean().sqrt())  # zero for a fresh adapter's A factors (its B starts at zero)
        by_group[kind] = {
            "coordinates": len(idx),
            "norm_share": round(float((g**2).sum() / (raw**2).sum()), 3),
            "coherence": round(clipped_signal(g, float("inf"))["mu_norm"] / rms, 4) if rms > 0 else None,
        }
    print("| group | coordinates | share of squared norm | coherence (mean / rms) |")
    print("|---|---|---|---|")
    for kind, v in by_group.items():
        print(f"| {kind} | {v['coordinates']:,} | {v['norm_share']:.1%} | {v['coherence']} |")
    whole = clipped_signal(raw, float("inf"))["mu_norm"] / float((raw**2).sum(1).mean().sqrt())
    print(f"coherence of the whole gradient: {whole:.4f}\n")
    print("| n | batch | clip | steps | sigma | clipped | signal | noise norm | SNR per step | SNR over the run |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['n']} | {r['batch']} | {r['clip']} | {r['steps']} | {r['sigma']} | {r['clipped_share']:.0%} | "
            f"{r['mu_norm']} | {r['noise_norm']} | {r['snr_step']} | {r['snr_run']} |"
        )
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "command": " ".join(sys.argv),
            "eps": args.eps,
            "epochs": args.epochs,
            "d": d,
            "m": len(raw),
            "median_gradient_norm": float(norms.median()),
            "seconds": seconds,
            "groups": by_group,
            "rows": rows,
        }
        Path(args.json).write_text(json.dumps(doc, indent=2) + "\n")


if __name__ == "__main__":
    main()
