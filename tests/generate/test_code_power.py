"""generate.code_power reaches the generate stage: the written records' codes follow the flattened release."""

from __future__ import annotations

from collections import Counter

import numpy as np

from dpsynth.config import load_config
from dpsynth.generate import stage
from dpsynth.privacy.codes import release_marginals
from dpsynth.rundir import RunDir, read_jsonl, write_json

DOMAINS = {"rating": (1, 2, 3, 4, 5), "category": ("a", "b", "c", "d")}


def _run(tmp_path, monkeypatch) -> RunDir:
    run = RunDir(tmp_path)
    units = [[{"rating": 5, "category": "a"}]] * 95 + [[{"rating": 1, "category": "b"}]] * 5
    release = release_marginals(units, DOMAINS, None, None)
    run.control_codes("dp").parent.mkdir(parents=True, exist_ok=True)
    write_json(run.control_codes("dp"), {"names": list(DOMAINS), "dp": True, "release": release.to_json()})
    monkeypatch.setattr(stage, "load_prepare_info", lambda _run: {"system_prompt": "s", "include_title": False})
    monkeypatch.setattr(stage, "generate_from_codes", lambda _m, _a, codes, *_args, **_kw: ["A review."] * len(codes))
    return run


def test_generated_codes_follow_the_flattened_release(tmp_path, monkeypatch):
    run = _run(tmp_path, monkeypatch)

    def shares(*overrides: str) -> tuple[Counter, Counter]:
        cfg = load_config(None, ["generate.num_records=4000", *overrides])
        stage.generate_arm(cfg, run, "dp", progress=False)
        rows = read_jsonl(run.generated("dp"))
        return Counter(r["codes"]["category"] for r in rows), Counter(r["codes"]["rating"] for r in rows)

    cat, rating = shares()
    assert cat["a"] / 4000 > 0.9 and cat["c"] == 0 and set(rating) == {1, 5}
    cat, rating = shares("generate.code_power={category: 0}")
    assert all(abs(cat[v] / 4000 - 0.25) < 0.03 for v in DOMAINS["category"])  # flat over the public domain
    assert rating[5] / 4000 > 0.9 and set(rating) == {1, 5}  # the other code as released
    assert np.isclose(sum(cat.values()), 4000)
