"""The ``generate`` stage: synthetic records from each arm's adapter, conditioned on released control codes.

Control codes are drawn from the histogram that the train stage released (``DIR/<arm>/control_codes.json``: with the
Gaussian mechanism for the DP arm), so generation never reads the private data: everything here is post-processing
of DP outputs and costs no privacy budget. The engine (``generate.engine``) is chosen in
:mod:`dpsynth.generate.engine`; every engine writes the same files with the same fields.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dpsynth.config import Config
from dpsynth.data.format import parse_response
from dpsynth.data.prepare import generation_budget, load_code_specs, load_prepare_info
from dpsynth.errors import DPSynthError
from dpsynth.generate.engine import generate_from_codes
from dpsynth.privacy.codes import CodePower, CodeRelease, load_code_release
from dpsynth.rundir import Arm, RunDir, read_json, write_jsonl
from dpsynth.train import prompt_format, warm_start


def sample_codes(
    release: CodeRelease, names: list[str], n: int, seed: int, power: CodePower = 1.0
) -> list[dict[str, Any]]:
    """``n`` control-code combinations drawn from the released distribution (marginals or joint histogram),
    flattened by ``generate.code_power`` (:func:`dpsynth.privacy.mechanisms.flatten`)."""
    if isinstance(power, dict) and (unknown := sorted(set(power) - set(names))):
        raise DPSynthError(f"generate.code_power names {', '.join(unknown)}, not a control code (codes: {names})")
    try:
        cells = release.sample(n, np.random.default_rng(seed), power)
    except ValueError as exc:  # a per-code power on the joint histogram
        raise DPSynthError(str(exc)) from exc
    return [dict(zip(names, cell, strict=True)) for cell in cells]


def generate_arm(cfg: Config, run: RunDir, arm: Arm, *, progress: bool = True) -> dict[str, Any]:
    """Write ``cfg.generate.num_records`` synthetic records for ``arm``; returns a summary (counts only)."""
    if not run.control_codes(arm).is_file():
        raise DPSynthError(f"{run.control_codes(arm)} is missing: run `dpsynth train` for the {arm} arm first")
    if (why := prompt_format.stale(cfg.model, run, arm)) is not None:
        raise DPSynthError(f"{why}: train the arm again in a new --out directory")
    codes_file = read_json(run.control_codes(arm))
    release = load_code_release(codes_file["release"], list(codes_file["names"]))
    info = load_prepare_info(run)
    warm_start.check_merged(cfg, run.root, (info.get("source") or {}).get("fingerprint"))  # the model generates too
    g = cfg.generate.model_copy(update={"max_new_tokens": generation_budget(info, cfg.generate.max_new_tokens)})
    include_title = bool(info.get("include_title", False))
    codes = sample_codes(release, list(codes_file["names"]), g.num_records, g.seed, g.code_power)
    # best-of-m reads each code against its public domain, as prepare declared it
    domains = {spec.name: list(spec.values) for spec in load_code_specs(run)} if g.candidates > 1 else None
    texts = generate_from_codes(
        cfg.model,
        run.adapter(arm),
        codes,
        info["system_prompt"],
        g,
        domains=domains,
        progress=progress,
        desc=f"generate {arm}",
    )
    rows = []
    for i, (c, text) in enumerate(zip(codes, texts, strict=True)):
        title, body = parse_response(text, include_title)
        row: dict[str, Any] = {"index": i, "arm": arm, "text": body, "codes": c}
        if include_title:
            row["title"] = title
        rows.append(row)
    n = write_jsonl(run.generated(arm), rows)
    return {"arm": arm, "records": n, "path": str(run.generated(arm))}
