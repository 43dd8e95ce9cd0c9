"""Merge a PUBLIC warm-start adapter into its base model's weights and save the result as a local model folder.

Why: ``train.init_adapter`` starts the DP adapter from a public one, so the warm start can be no larger than the DP
adapter (r 8 on q,v of the top 8 blocks in the 5,000-record configs), which DP keeps small on purpose (every
trained parameter adds noise). A warm start merged into the weights has no such limit: fit it without DP on public
data with LoRA on every linear module of every block, merge it here, and give the folder as ``model.name``; the DP
arm then trains its own fresh adapter on top, and the eps-0 row prompts the merged model (still no private data).

The adapter must come from public data only. The folder records which adapter and data it came from
(``dpsynth_warm_start.json``), and dpsynth refuses it, as it refuses such a ``train.init_adapter``, for a run on the
data the adapter was fitted to or a run whose folder holds the adapter; the rest is the user's declaration, which
each arm's ``privacy.json`` records (``merged_warm_start``)::

    dpsynth prepare --config bench/public_warmstart_amazon_merged.yaml --out runs/public-home-merged
    dpsynth train --config bench/public_warmstart_amazon_merged.yaml --out runs/public-home-merged
    python bench/merge_warmstart.py runs/public-home-merged/no_dp/adapter --out runs/smol-home-merged
    dpsynth frontier --config bench/proxy_categories.yaml --out runs/proxy-merged --eps 4 \
        model.name=runs/smol-home-merged
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from dpsynth.models.adapters import attach_adapter
from dpsynth.models.config import ModelConfig
from dpsynth.models.convert import adapter_digest
from dpsynth.models.loader import load_model, load_tokenizer
from dpsynth.rundir import RunDir, atomic_path
from dpsynth.train import warm_start


def merge(adapter: Path, out: Path, base: str) -> dict[str, str]:
    """Save ``base`` with ``adapter`` merged in (float32) and its tokenizer to ``out``; return the provenance."""
    cfg = ModelConfig(name=base, dtype="float32", device="cpu")
    model = attach_adapter(load_model(cfg, device=torch.device("cpu")), adapter).merge_and_unload()
    tokenizer = load_tokenizer(cfg)
    stamp = {
        "base_model": base,
        "adapter": str(adapter.resolve()),
        "adapter_digest": adapter_digest(adapter),
        "fitted_to": warm_start.origin(adapter),  # dpsynth refuses the folder for a run on the same data
    }
    with atomic_path(out) as tmp:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (Path(tmp) / warm_start.MERGED_STAMP).write_text(json.dumps(stamp, indent=2) + "\n")
    return stamp


def base_model(adapter: Path, given: str | None) -> str:
    """The base to merge into: the ``model.name`` that the adapter's run (``RUN/ARM/adapter``) saved in its
    ``config.yaml``, or ``given`` where that is unknown. A ``given`` base other than the run's is refused: an adapter
    of the same shape loads into another base without complaint, and the merged folder would claim a warm start it
    does not hold."""
    trained_on = warm_start.run_model(RunDir(adapter.resolve().parent.parent))
    if trained_on is None:
        if given is None:
            raise SystemExit(f"{adapter}: its run's config.yaml names no model.name; give --base")
        return given
    if given is not None and given != trained_on and not _same_folder(given, trained_on):
        raise SystemExit(f"--base {given}: the adapter {adapter} was trained on {trained_on}")
    return trained_on


def _same_folder(a: str, b: str) -> bool:
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    return pa.exists() and pb.exists() and pa.resolve() == pb.resolve()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("adapter", type=Path, help="a public warm start: DIR/no_dp/adapter of `dpsynth train`")
    parser.add_argument("--out", type=Path, required=True, help="the merged model folder to write (new)")
    parser.add_argument(
        "--base",
        default=None,
        help="the adapter's model.name; default: the one its run's config.yaml names (another: refused)",
    )
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"{args.out} exists: choose a new folder")
    print(json.dumps(merge(args.adapter, args.out, base_model(args.adapter, args.base)), indent=2))


if __name__ == "__main__":
    main()
