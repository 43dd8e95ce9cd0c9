"""A feasibility probe, NOT a generator: does one round of Private Evolution's DP vote lift a DP fine-tuned arm's text?

Takes a finished frontier row (a DP arm trained on the sweep's training split), generates a pool of ``--pool`` records
from it (codes drawn from the arm's released code distribution, as any generation of the arm), lets every training
unit vote once for its nearest pool record within its code cell (:func:`dpsynth.pe.privacy.nearest_votes`), adds
Gaussian noise for a vote release of ``--eps-select`` alone, keeps the top of each cell (quota: the first ``--n`` pool
records' cells, a draw from the released distribution) and scores the kept records as a frontier row
(:func:`dpsynth.frontier.metrics.score_row`: classifiers on the real test split, MAUVE, code agreement).
Rows: ``pool[:n]`` (the arm as generated, fresh draws), and the selection at each level; ``inf`` is the exact votes
(no noise: an upper bound, not releasable). The composed epsilon of the arm's DP-SGD and the vote release is printed.

Run it on PUBLIC proxy data only (the votes read the sweep's training split): it chooses whether a hybrid generator
is worth building, which is a hyperparameter choice. The vote and the MAUVE/embedding classifier use the same
sentence embedding (all-MiniLM-L6-v2), so those two figures flatter the selection; the TF-IDF classifier does not
share it. Nothing here is charged to a ledger: the probe releases nothing.

    python bench/pe_select_probe.py --sweep runs/proxy-blocks/top8-bf16w-s1 --row eps4 --pool 3000 --n 1000 \
        --eps-select 1,2,4,inf --lm-mauve --json bench/results/recipe-search/pe-select/top8-s1.json
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from mauve_features import lm_features  # bench/: the same second feature space


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", type=Path, required=True, help="a finished frontier directory (public proxy)")
    parser.add_argument("--row", default="eps4", help="its DP row (rows/ROW)")
    parser.add_argument("--pool", type=int, default=3000)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument(
        "--sizes", default=None, help="also select from the first K of the pool, for each K listed (e.g. 3000,6000)"
    )
    parser.add_argument("--eps-select", default="1,2,inf")
    parser.add_argument("--seed", type=int, default=11, help="generation seed of the pool (the row used its own)")
    parser.add_argument("--noise-seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="where the row is copied to generate (default: beside)")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--lm-mauve",
        action="store_true",
        help="also MAUVE on the base LM's mean-pooled last hidden states: a feature space the vote does not use",
    )
    args = parser.parse_args()

    import numpy as np

    from dpsynth import api, machine
    from dpsynth.config import load_config
    from dpsynth.data.prepare import load_code_specs
    from dpsynth.data.records import code_key, group_by_unit, read_records
    from dpsynth.evaluate.embeddings import embed
    from dpsynth.evaluate.mauve_metric import mauve_over_draws
    from dpsynth.frontier.metrics import load_reference, score_row
    from dpsynth.pe.privacy import nearest_votes, noisy_histogram, select
    from dpsynth.privacy.accounting import Mechanism, epsilon, histogram_mechanism, histogram_noise_for_epsilon
    from dpsynth.rundir import RunDir, read_json, read_jsonl

    sweep = RunDir(args.sweep)
    cfg = load_config(args.sweep / "config.yaml", [])
    row_dir = args.sweep / "rows" / args.row
    work = args.work or args.sweep / f"probe-{args.row}-pool{args.pool}-seed{args.seed}"
    if (
        not (work / "dp" / "generated_sequences_with_dp.jsonl").is_file()
        or len(read_jsonl(work / "dp" / "generated_sequences_with_dp.jsonl")) != args.pool
    ):
        if work.exists() and not (work / "dp" / "privacy.json").is_file():
            raise SystemExit(f"{work} exists and is not a copy of a DP row: choose another --work")
        shutil.rmtree(work, ignore_errors=True)
        shutil.copytree(row_dir, work)
        overrides = [f"generate.num_records={args.pool}", f"generate.seed={args.seed}", "generate.arms=[dp]"]
        rcfg = load_config(work / "config.yaml", overrides)
        t0 = time.perf_counter()
        api.generate(rcfg, work)
        print(f"pool of {args.pool} generated in {time.perf_counter() - t0:.0f} s", flush=True)
    run = RunDir(work)
    pool = [{"text": r["text"], "codes": r["codes"]} for r in read_jsonl(run.generated("dp"))]
    privacy = read_json(run.privacy_json("dp"))
    names = [s.name for s in load_code_specs(sweep)]

    ref = load_reference(cfg, sweep)
    units = list(group_by_unit(read_records(sweep.train)).values())
    flat = embed([r.text for recs in units for r in recs], memo=True)
    unit_vectors, at = [], 0
    for recs in units:
        unit_vectors.append(flat[at : at + len(recs)])
        at += len(recs)
    unit_cells = [[code_key(r.codes, names) for r in recs] for recs in units]
    cand_all = embed([p["text"] for p in pool])
    cells_all = [code_key(p["codes"], names) for p in pool]
    quota = Counter(cells_all[: args.n])  # a draw of n from the released distribution: every size keeps these
    arm_mechanisms = [Mechanism.from_json(m) for m in privacy["mechanisms"]]  # the code release and DP-SGD
    delta = float(privacy["delta"])
    accountant = privacy["accountant"]  # the arm's own record: what its epsilon was computed with
    results: list[dict[str, Any]] = []

    lm_test = lm_features(cfg, ref.test_texts) if args.lm_mauve else None
    repeats = cfg.frontier.mauve_repeats

    def score(name: str, records: list[dict[str, Any]], extra: dict[str, Any]) -> None:
        row = {"key": name, "eps": float(privacy["target_epsilon"]), "seconds": {}}
        entries = score_row(cfg, ref, row, records, synthetic=True)
        if lm_test is not None:
            draws = mauve_over_draws(lm_features(cfg, [r["text"] for r in records]), lm_test, repeats=repeats, seed=0)
            extra = {**extra, "mauve_lm": draws.mean, "mauve_lm_sd": draws.sd}
            print(f"{name}: MAUVE on LM features {draws.mean:.3f} ± {draws.sd:.3f}", flush=True)
        for e in entries:
            e.update(extra, probe_row=name)
        results.extend(entries)
        emb = {e["label"]: e for e in entries if e["classifier"] == "embedding"}
        tf = {e["label"]: e for e in entries if e["classifier"] == "tfidf"}
        first = next(iter(emb.values()))
        cells = " ".join(
            f"{lab} {e['accuracy']:.3f}/{e['macro_f1']:.3f} (tfidf {tf[lab]['accuracy']:.3f})" for lab, e in emb.items()
        )
        print(
            f"{name}: MAUVE {first['mauve']:.3f} ± {first['mauve_sd']:.3f}, agreement {first['code_agreement']:.3f}, "
            f"well-formed {first['well_formed']:.2f}; {cells}",
            flush=True,
        )

    if args.lm_mauve:  # where real text stands on the second feature space: n real training records
        real = [{"text": t, "codes": {}} for t in ref.train_texts[: args.n]]
        draws = mauve_over_draws(lm_features(cfg, [r["text"] for r in real]), lm_test, repeats=repeats, seed=0)
        print(f"real[:n]: MAUVE on LM features {draws.mean:.3f} ± {draws.sd:.3f}", flush=True)
        results.append({"probe_row": "real[:n]", "mauve_lm": draws.mean, "mauve_lm_sd": draws.sd})
    score("pool[:n]", pool[: args.n], {"eps_select": None, "epsilon_total": float(privacy["epsilon"])})
    sizes = [int(k) for k in args.sizes.split(",")] if args.sizes else [len(pool)]
    for size in sizes:
        cand, cand_cells = cand_all[:size], cells_all[:size]
        votes = nearest_votes(unit_vectors, unit_cells, cand, cand_cells)
        print(f"pool {size}: {len(units)} units, {int(votes.sum())} votes, {len(quota)} cells, max {votes.max()}")
        for level in args.eps_select.split(","):
            # the same seed at every level: the noise is one draw, scaled by each level's sigma (levels compare)
            rng = np.random.default_rng(args.noise_seed)
            if level == "inf":
                noisy, total, sigma = votes, None, 0.0
            else:
                sigma = histogram_noise_for_epsilon(float(level), delta, accountant)
                noisy = noisy_histogram(votes, sigma, rng)
                total = epsilon([*arm_mechanisms, histogram_mechanism(sigma, 1)], delta, accountant)
            kept = select(noisy, cand_cells, quota, cutoff=0.0, mode="rank", rng=rng)
            extra = {"pool": size, "eps_select": level, "sigma_select": sigma, "epsilon_total": total}
            print(f"pool {size}, eps_select {level}: sigma {sigma:.2f}, composed epsilon {total}", flush=True)
            score(f"pool {size}, select eps {level}", [pool[i] for i in kept], extra)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "command": " ".join(["python", *sys.argv]),
            "machine": machine.describe(),
            "date": time.strftime("%Y-%m-%d"),
            "sweep": str(args.sweep),
            "row": args.row,
            "pool": args.pool,
            "n": args.n,
            "arm_epsilon": privacy["epsilon"],
            "units": len(units),
            "rows": results,
        }
        args.json.write_text(json.dumps(doc, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
