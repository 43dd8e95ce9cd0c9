"""Private Evolution end to end on a prepared run directory: ``DIR/pe/`` with the synthetic records and their guarantee.

Order of events (the same discipline as the DP fine-tuning arm, :mod:`dpsynth.train.stage`):

1. **Plan and charge.** The plan (:func:`dpsynth.pe.privacy.make_pe_plan`) is calibrated from the configuration and
   the number of units, and the whole run (code release and ``T`` vote histograms, one composition) is reserved in
   the ledger **before any record is read**; the reservation is committed once ``privacy.json`` is written.
2. **Code release.** The control-code distribution is released with the Gaussian mechanism
   (:mod:`dpsynth.privacy.codes`), and ``N`` code combinations drawn from it fix how many samples each cell keeps
   (``quota``): the output has the released code distribution, as the fine-tuned arms' output does.
3. **Iterations.** RANDOM_API fills the first population, cell by cell; then, ``T`` times: embed the population,
   let every unit vote once within its cells, add Gaussian noise (:mod:`dpsynth.pe.privacy`), keep each cell's quota
   by the noisy counts, and (but for the last time) ask VARIATION_API for ``L`` variations of each kept sample; the
   kept samples and their variations are the next population. The last selection is the output.
4. A checkpoint after the code release and after every iteration (:mod:`dpsynth.pe.state`); ``--resume``
   continues from it without a second charge and without voting on a finished iteration again.

Files: ``DIR/pe/generated_sequences_pe.jsonl`` (the records, with the fields of the other arms),
``DIR/pe/control_codes.json``, ``DIR/pe/pe_log.jsonl`` (per iteration: sizes, timings and summaries of the noisy
counts, which are DP outputs; never exact votes) and ``DIR/pe/privacy.json``.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from collections import Counter
from typing import Any

import numpy as np

from dpsynth.config import Config
from dpsynth.data.prepare import load_code_specs, load_prepare_info
from dpsynth.data.records import code_key, group_by_unit, read_records
from dpsynth.errors import DPSynthError
from dpsynth.pe.privacy import PEPlan, initial_size, make_pe_plan, nearest_votes, noisy_histogram, select
from dpsynth.pe.state import PEState, load_state, save_state
from dpsynth.privacy.accounting import epsilon as compute_epsilon
from dpsynth.privacy.codes import domain_cells, load_code_release, release_codes
from dpsynth.privacy.mechanisms import noise_rng
from dpsynth.privacy.releases import commit_release, reserve_release
from dpsynth.rundir import RunDir, read_json, write_json, write_jsonl

log = logging.getLogger(__name__)
ARM = "pe"


def planned_units(info: dict[str, Any]) -> int:
    """Privacy units (people and canaries) as prepare counted them: known before any record is read."""
    counts = info["counts"]
    return int(counts["train_units"]) + int(counts.get("canaries", 0))


def _state_path(run: RunDir) -> Any:
    return run.checkpoints(ARM) / "state.json"


def _log_path(run: RunDir) -> Any:
    return run.arm(ARM) / "pe_log.jsonl"


def _begin(cfg: Config, run: RunDir, plan: PEPlan, info: dict[str, Any]) -> dict[str, Any] | None:
    return reserve_release(cfg.ledger, plan, info, run.root, ARM)


def commit(run: RunDir, privacy: dict[str, Any]) -> dict[str, Any]:
    """Commit the pending ledger entry named in ``privacy`` (idempotent: a crashed commit is finished on resume)."""
    return commit_release(privacy, run.privacy_json(ARM), [run.generated(ARM), run.control_codes(ARM)])


def _finished(run: RunDir) -> bool:
    return run.privacy_json(ARM).is_file() and run.generated(ARM).is_file()


def _seed(cfg: Config, offset: int) -> int | None:
    return None if cfg.pe.noise_seed is None else cfg.pe.noise_seed + offset


def run_pe(cfg: Config, run: RunDir, *, resume: bool = False, progress: bool = True) -> dict[str, Any]:
    """Run (or, with ``resume``, continue) Private Evolution; returns ``DIR/pe/privacy.json``."""
    if not run.prepare_json.is_file():
        raise DPSynthError(f"{run.prepare_json} is missing: run `dpsynth prepare --out {run.root}` first")
    if resume and _finished(run):
        log.info("resume: PE already finished (%s), not running it again", run.privacy_json(ARM))
        return commit(run, read_json(run.privacy_json(ARM)))
    info = load_prepare_info(run)
    specs = load_code_specs(run)
    domains = {s.name: s.values for s in specs}
    names = [s.name for s in specs]
    cells = domain_cells(domains, cfg.privacy.code_release)
    n = planned_units(info)
    plan = make_pe_plan(cfg, n=n, histogram_cells=len(cells))
    state = load_state(_state_path(run))
    if state is not None and not resume:
        raise DPSynthError(
            f"{run.checkpoints(ARM)} holds an interrupted PE run: continue it with --resume (no second charge), or "
            "use a new --out directory"
        )
    if state is not None and PEPlan.from_json(state.plan) != plan:
        raise DPSynthError(
            f"the PE checkpoint in {run.checkpoints(ARM)} was planned with other privacy settings; resume with the "
            "configuration it was started with, or use a new --out directory"
        )
    from dpsynth.train import warm_start

    warm_start.check_merged(cfg, run.root, (info.get("source") or {}).get("fingerprint"))  # before the charge
    ledger_entry = _begin(cfg, run, plan, info)  # before any record is read (a resume gets its reservation back)

    units = list(group_by_unit(read_records(run.train)).values())
    if len(units) != n:
        raise DPSynthError(f"{run.train} holds {len(units)} units but prepare.json counted {n}; prepare again")
    from dpsynth.pe.apis import PEModel

    model = PEModel(cfg, info["system_prompt"], bool(info.get("include_title", False)), progress=progress)
    if state is None:
        state = _start(cfg, run, plan, units, names, domains, info, model)
    release = load_code_release(state.code_release, names)
    write_json(run.control_codes(ARM), {"names": names, "dp": True, "release": state.code_release})
    _iterate(cfg, run, plan, state, units, names, model, progress=progress)
    return _finish(cfg, run, plan, state, info, ledger_entry, release_kind=type(release).__name__)


def _start(
    cfg: Config,
    run: RunDir,
    plan: PEPlan,
    units: list[Any],
    names: list[str],
    domains: dict[str, Any],
    info: dict[str, Any],
    model: Any,
) -> PEState:
    """Release the codes, fix each cell's quota and generate the first population; checkpoint."""
    from dpsynth.generate.stage import sample_codes

    one = int(info["max_records_per_user"]) == 1 or info["privacy_unit"] == "record"
    unit_codes = [[dict(r.codes) for r in recs] for recs in units]
    release = release_codes(
        unit_codes,
        domains,
        cfg.privacy.code_release,
        plan.histogram_sigma,
        noise_rng(_seed(cfg, 2)),
        one_record_per_unit=one,
    )
    n_sel = cfg.pe.candidates or cfg.generate.num_records
    drawn = sample_codes(release, names, n_sel, cfg.generate.seed, cfg.generate.code_power)
    quota = Counter(code_key(c, names) for c in drawn)
    factor = initial_size(cfg) / n_sel
    codes = [dict(zip(names, cell, strict=True)) for cell, q in quota.items() for _ in range(math.ceil(q * factor))]
    start = time.perf_counter()
    samples = model.random_api(codes, cfg.generate.seed)
    population = [{"text": b, "title": t, "codes": c} for (t, b), c in zip(samples, codes, strict=True)]
    state = PEState(
        plan=plan.to_json(),
        names=names,
        code_release=release.to_json(),
        quota=[[list(cell), q] for cell, q in quota.items()],
        noise_state=dict(noise_rng(_seed(cfg, 3)).bit_generator.state),
        population=population,
        log=[
            {
                "iteration": 0,
                "random_samples": len(population),
                "seconds": {"random": round(time.perf_counter() - start, 2)},
            }
        ],
    )
    save_state(_state_path(run), state)
    return state


def _embed(texts: list[str], batch_size: int, *, memo: bool = False) -> np.ndarray:
    from dpsynth.evaluate.embeddings import embed

    return embed(texts, batch_size=batch_size, memo=memo)


def _iterate(
    cfg: Config,
    run: RunDir,
    plan: PEPlan,
    state: PEState,
    units: list[Any],
    names: list[str],
    model: Any,
    *,
    progress: bool,
) -> None:
    """The remaining iterations, each checkpointed; a finished iteration is never voted on again."""
    if state.iteration >= plan.iterations:
        return
    pe, b = cfg.pe, cfg.pe.embed_batch_size
    # private: kept in memory only, never written; the memo reuses a frontier's vectors of the same records
    flat = _embed([r.text for recs in units for r in recs], b, memo=True)
    bounds = np.cumsum([0, *(len(recs) for recs in units)])
    unit_vectors = [flat[bounds[u] : bounds[u + 1]] for u in range(len(units))]
    known: dict[str, np.ndarray] = {}  # embeddings of synthetic texts: kept samples are voted on again
    unit_cells = [[code_key(r.codes, names) for r in recs] for recs in units]
    quota = {tuple(cell): int(q) for cell, q in state.quota}
    while state.iteration < plan.iterations:
        it = state.iteration + 1
        seconds: dict[str, float] = {}
        start = time.perf_counter()
        pop = state.population
        cand_cells = [code_key(p["codes"], names) for p in pop]
        fresh = list(dict.fromkeys(p["text"] for p in pop if p["text"] not in known))
        kept_known = {p["text"]: known[p["text"]] for p in pop if p["text"] in known}
        known = {**kept_known, **dict(zip(fresh, _embed(fresh, b), strict=True))}
        cand = np.stack([known[p["text"]] for p in pop])
        seconds["embed"] = time.perf_counter() - start
        start = time.perf_counter()
        rng = state.noise_rng()
        noisy = noisy_histogram(nearest_votes(unit_vectors, unit_cells, cand, cand_cells), plan.noise_multiplier, rng)
        cutoff = pe.threshold * plan.noise_multiplier
        chosen = select(
            noisy,
            cand_cells,
            quota,
            cutoff=cutoff,
            mode=pe.selection,
            rng=np.random.default_rng([cfg.generate.seed, it]),
        )
        seconds["vote"] = time.perf_counter() - start
        kept = [pop[i] for i in chosen]
        entry: dict[str, Any] = {
            "iteration": it,
            "population": len(pop),
            "selected": len(kept),
            "distinct_selected": len(set(chosen)),
            "sigma": plan.noise_multiplier,
            "noisy_count_total": float(noisy.sum()),
            "noisy_count_max": float(noisy.max()),
            "above_threshold": int((noisy > cutoff).sum()),
            "selected_mean_noisy_count": float(noisy[chosen].mean()),
            "selected_mean_words": float(np.mean([len(p["text"].split()) for p in kept])),
        }
        if it < plan.iterations:
            start = time.perf_counter()
            kept = _with_variations(cfg, model, kept, it)
            seconds["variation"] = time.perf_counter() - start
        entry["seconds"] = {k: round(v, 2) for k, v in seconds.items()}
        state.population = kept
        state.iteration = it
        state.noise_state = dict(rng.bit_generator.state)
        state.log.append(entry)
        save_state(_state_path(run), state)  # the iteration is done: a resume starts after it
        log.log(logging.INFO if progress else logging.DEBUG, "PE iteration %d/%d: %s", it, plan.iterations, entry)


def _with_variations(cfg: Config, model: Any, kept: list[dict[str, Any]], it: int) -> list[dict[str, Any]]:
    """The kept samples and ``L`` variations of each (seeded by iteration and fold: a resume redoes the same)."""
    out = list(kept)
    for fold in range(cfg.pe.variations):
        seed = cfg.generate.seed + 1000 * it + fold + 1
        varied = model.variation_api([p["text"] for p in kept], [p["codes"] for p in kept], seed)
        out += [
            {"text": body, "title": title or p.get("title"), "codes": p["codes"]}
            for (title, body), p in zip(varied, kept, strict=True)
        ]
    return out


def _finish(
    cfg: Config,
    run: RunDir,
    plan: PEPlan,
    state: PEState,
    info: dict[str, Any],
    ledger_entry: dict[str, Any] | None,
    *,
    release_kind: str,
) -> dict[str, Any]:
    """Write the records, the log and privacy.json, commit the ledger entry, delete the (private) checkpoint."""
    include_title = bool(info.get("include_title", False))
    rows = []
    for i, p in enumerate(state.population):
        row: dict[str, Any] = {"index": i, "arm": ARM, "text": p["text"], "codes": p["codes"]}
        if include_title:
            row["title"] = p.get("title")
        rows.append(row)
    write_jsonl(run.generated(ARM), rows)
    write_jsonl(_log_path(run), state.log)
    mechanisms = plan.mechanisms(state.iteration)
    accountant = plan.accountant
    privacy = {
        "dp": True,
        "generator": "pe",
        "epsilon": compute_epsilon(mechanisms, plan.delta, accountant),  # type: ignore[arg-type]
        "delta": plan.delta,
        "target_epsilon": plan.target_epsilon,
        "accountant": accountant,
        "noise_multiplier": plan.noise_multiplier,
        "sample_rate": 1.0,
        "steps": state.iteration,
        "iterations": state.iteration,
        "variations": cfg.pe.variations,
        "candidates": len(rows),
        "population": plan.population,
        "selection": cfg.pe.selection,
        "votes_per_unit": 1,
        "histogram_sigma": plan.histogram_sigma,
        "code_release": release_kind,
        "privacy_unit": info["privacy_unit"],
        "max_records_per_user": info["max_records_per_user"],
        "training_units": plan.n,
        "model": cfg.model.api_model or cfg.model.name,
        "model_api_base": cfg.model.api_base,
        "embedding_model": "all-MiniLM-L6-v2",
        "mechanisms": [m.to_json() for m in mechanisms],
        "epsilon_by_mechanism": {
            m.name: compute_epsilon([m], plan.delta, accountant)  # type: ignore[arg-type]
            for m in mechanisms
        },
        "source": info.get("source", {}),
        "ledger": ledger_entry,
    }
    write_json(run.privacy_json(ARM), privacy)  # before the commit: a crash in between is finished by --resume
    privacy = commit(run, privacy)
    shutil.rmtree(run.checkpoints(ARM), ignore_errors=True)  # private (noise state); the records are the output
    return privacy
