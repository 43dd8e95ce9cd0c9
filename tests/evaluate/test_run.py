"""The evaluate stage end to end on a tiny run: metrics.json's contract, no real text in it, canary counting.

One run directory is made per module (tiny Llama, a generic-schema JSONL source whose every review carries a
distinctive marker, canaries, two training steps per arm, 8 synthetic records per arm) by ``run_pipeline``, which
ends with the evaluate stage; the tests read its metrics.json. One more evaluation, through the CLI, runs on a copy
whose generated files were edited (a canary and a real record pasted in) to check that the counts react.
"""

from __future__ import annotations

import doctest
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

from dpsynth import api
from dpsynth.cli import app
from dpsynth.config import load_config
from dpsynth.data.canaries import read_canaries
from dpsynth.data.demo import DEMO_CODE_DOMAINS, demo_records
from dpsynth.data.format import IGNORE_INDEX, encode_prompt, encode_unit
from dpsynth.data.records import Record, read_records
from dpsynth.evaluate import collect, model_privacy, prefix_nll
from dpsynth.evaluate import run as run_module
from dpsynth.evaluate.collect import MetricList, assert_no_real_text, jsonable, sample
from dpsynth.evaluate.model_privacy import UnitScorer, canary_scorer
from dpsynth.evaluate.run import evaluate_run
from dpsynth.evaluate.scoring import response_nll
from dpsynth.rundir import RunDir, read_json, read_jsonl, write_jsonl

MARKER = "Quokkazine"  # in every real review of the source; must never reach metrics.json
TOP_LEVEL = {"schema_version", "run", "metrics", "tables", "distributions", "samples", "timing_s"}
GROUPS = ("privacy", "fidelity", "utility", "quality")
EXPECTED_NAMES = {
    "privacy.canary.name_hits",
    "privacy.canary.street_hits",
    "privacy.canary.phone_hits",
    "privacy.canary.secret_hits",
    "privacy.exposure.mean",
    "privacy.exposure.max",
    "privacy.mia.loss.auc",
    "privacy.mia.loss.tpr_at_1pct_fpr",
    "privacy.mia.reference.auc",
    "privacy.mia.reference.tpr_at_1pct_fpr",
    "privacy.dcr.median_ratio",
    "privacy.dcr.share_below_test_p05",
    "privacy.verbatim.excess",
    "privacy.verbatim.rate",
    "fidelity.length.kl",
    "fidelity.length.wasserstein",
    "fidelity.rating.kl",
    "fidelity.rating.wasserstein",
    "fidelity.category.kl",
    "fidelity.unigram.kl",
    "fidelity.unigram.wasserstein",
    "fidelity.nn_similarity.mean",
    "fidelity.mauve",
    "fidelity.correlation.frobenius",
    "utility.tfidf.rating.accuracy",
    "utility.tfidf.rating.macro_f1",
    "utility.embedding.rating.accuracy",
    "utility.embedding.rating.macro_f1",
    "utility.code_agreement.rating",
    "quality.well_formed.rate",
    "quality.gibberish.rate",
    "quality.abrupt_ending.rate",
    "quality.repetitive.rate",
}
SMALL_EVAL = [
    "evaluate.max_records=40",
    "evaluate.exposure_candidates=20",
    "evaluate.exposure_canaries=2",
    "evaluate.mia_max_records=10",
    "evaluate.num_samples=3",
]


def _source(path: Path) -> Path:
    rows = demo_records(120, seed=3)
    for r in rows:
        r["text"] = f"{r['text']} {MARKER} aside."
    write_jsonl(path, rows)
    return path


def _cfg(model_dir: Path, source: Path, *extra: str):
    return load_config(
        None,
        [
            f"model.name={model_dir}",
            f"data.path={source}",
            "data.schema=generic",
            "data.fields.text=text",
            "data.fields.title=title",
            "data.fields.user=user_id",
            "data.fields.item=item_id",
            "data.fields.codes={rating: rating, category: category}",
            f"data.code_domains={json.dumps(DEMO_CODE_DOMAINS)}",
            "data.canary_rate=0.1",
            "data.max_tokens=64",  # canaries' secrets fall inside the trained tokens
            "train.batch_size=8",
            "train.physical_batch_size=4",
            "train.max_steps=2",
            "generate.num_records=8",
            "generate.max_new_tokens=12",
            "generate.batch_size=8",
            *SMALL_EVAL,
            *extra,
        ],
    )


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory, tiny_model_dir) -> tuple[RunDir, dict[str, Any]]:
    root = tmp_path_factory.mktemp("evalrun")
    with pytest.MonkeyPatch.context() as mp:  # a module fixture runs outside the per-test ledger isolation
        mp.setenv("DPSYNTH_LEDGER", str(root / "ledger.sqlite"))
        results = api.run_pipeline(_cfg(tiny_model_dir, _source(root / "reviews.jsonl")), root / "run", progress=False)
    run = RunDir(root / "run")
    assert results["evaluate"] == read_json(run.metrics_json)
    return run, results["evaluate"]


def test_metrics_json_keeps_the_contract(evaluated):
    run, doc = evaluated
    assert set(doc) == TOP_LEVEL and doc["schema_version"] == 1
    info = doc["run"]
    assert Path(info["model"]).is_dir()  # the tiny model's folder
    assert info["privacy_unit"] == "user" and info["training_units"] > 0 and info["n_test_records"] > 0
    assert info["n_synthetic"] == {"dp": 8, "no_dp": 8}
    dp_privacy = read_json(run.privacy_json("dp"))
    for key in ("epsilon", "delta", "accountant", "noise_multiplier", "sample_rate", "steps", "max_grad_norm"):
        assert info["dp"][key] == dp_privacy[key], key
    assert info["dp"]["mechanisms"] == dp_privacy["mechanisms"]
    assert info["canaries"] == {"count": len(read_canaries(run.canaries)), "rate": 0.1}

    tables = doc["tables"]
    assert {"canary_leakage", "utility", "quality", "mia"} <= set(tables)
    canary = tables["canary_leakage"]
    assert canary["columns"] == ["Name", "Street", "Phone", "Canary"]
    assert set(canary["rows"]) == {"dp", "no_dp"} and all(len(r) == 4 for r in canary["rows"].values())
    assert canary["n_synthetic"] == {"dp": 8, "no_dp": 8} and canary["n_canaries"] == info["canaries"]["count"]
    utility = tables["utility"]
    assert utility["columns"] == ["source", "family", "task", "accuracy", "macro_f1"]
    assert {tuple(r[:3]) for r in utility["rows"]} >= {
        (s, f, "rating") for s in ("real", "dp", "no_dp", "dp_logreg") for f in ("tfidf", "embedding")
    }
    assert "rating" in utility["majority_accuracy"]
    quality = tables["quality"]
    assert quality["columns"] == ["arm", "n", "well_formed", "gibberish", "abrupt_ending", "repetitive"]
    assert {r[0] for r in quality["rows"]} == {"dp", "no_dp", "real"} and set(quality["definitions"]) >= {"gibberish"}
    assert "real" not in quality["examples"]  # the real split's example indices never become text
    mia = tables["mia"]
    assert mia["columns"] == ["arm", "attack", "auc", "tpr_at_1pct_fpr"]
    assert {(r[0], r[1]) for r in mia["rows"]} == {(a, k) for a in ("dp", "no_dp") for k in ("loss", "reference")}

    dist = doc["distributions"]
    assert set(dist["length_tokens"]) == {"real", "dp", "no_dp"}
    assert dist["rating"]["domain"] == [1, 2, 3, 4, 5]
    for key in ("real", "dp", "no_dp"):
        assert sum(dist["rating"][key]) == pytest.approx(1.0)
    assert dist["category"]["domain"] == DEMO_CODE_DOMAINS["category"]
    assert set(dist["nearest_real_similarity"]) == {"reference", "dp", "no_dp"}
    assert set(dist["dcr"]) == {"test", "dp", "no_dp"} and len(dist["dcr"]["dp"]) == 8
    assert set(doc["samples"]) == {"dp", "no_dp"} and all(len(s) <= 3 for s in doc["samples"].values())
    assert {"load", "embeddings", "privacy.mia", "privacy.exposure", "fidelity", "utility", "total"} <= set(
        doc["timing_s"]
    )
    assert run.report_html.is_file()  # api.evaluate builds the report from metrics.json


def test_every_group_for_both_arms_with_finite_or_null_values(evaluated):
    _, doc = evaluated
    metrics = doc["metrics"]
    keys = [(m["name"], m["arm"]) for m in metrics]
    assert len(keys) == len(set(keys))
    for m in metrics:
        assert set(m) >= {"name", "group", "arm", "value", "better", "definition"}
        assert m["group"] in GROUPS and m["name"].startswith(m["group"] + ".")
        assert m["better"] in ("higher", "lower", "none") and len(m["definition"]) > 20
        assert m["value"] is None or (isinstance(m["value"], float) and math.isfinite(m["value"])), m
    for group in GROUPS:
        for arm in ("dp", "no_dp"):
            assert any(m["group"] == group and m["arm"] == arm and m["value"] is not None for m in metrics), (
                group,
                arm,
            )
    names = {m["name"] for m in metrics}
    assert names >= EXPECTED_NAMES, EXPECTED_NAMES - names
    for name in ("privacy.mia.reference.auc", "fidelity.mauve", "privacy.exposure.mean", "privacy.dcr.median_ratio"):
        for arm in ("dp", "no_dp"):
            assert run_value(doc, name, arm) is not None, (name, arm)
    assert run_value(doc, "utility.tfidf.rating.accuracy", "dp_logreg") is not None
    assert run_value(doc, "quality.well_formed.rate", "real") is not None  # the real base rate
    for arm in ("dp", "no_dp"):  # code agreement: a share, with the real classifier's own test accuracy beside it
        (agr,) = [m for m in metrics if m["name"] == "utility.code_agreement.rating" and m["arm"] == arm]
        assert 0.0 <= agr["value"] <= 1.0 and 0.0 <= agr["reference"] <= 1.0 and agr["n"] > 0
    # MAUVE's real reference uses as many real training records as an arm has (the same sample-size bias).
    mauve = {m["arm"]: m for m in metrics if m["name"] == "fidelity.mauve"}
    assert mauve["real"]["n"] == max(mauve[a]["n"] for a in ("dp", "no_dp")) and mauve["real"]["value"] is not None
    # each a mean over evaluate.mauve_repeats draws of equal-size samples, with the spread beside it
    for m in mauve.values():
        assert m["repeats"] == 5 and m["sd"] is not None and m["sd"] >= 0 and m["n"] == m["n_real"]
    # and again with both sides cut to the generators' token budget: the same arms and sample sizes
    bounded = {m["arm"]: m for m in metrics if m["name"] == "fidelity.mauve_bounded"}
    assert set(bounded) == set(mauve) and all(bounded[a]["n"] == mauve[a]["n"] for a in mauve)
    assert all(0.0 < m["value"] <= 1.0 and m["sd"] is not None for m in bounded.values())
    assert 0.0 <= run_value(doc, "privacy.exposure.mean", "dp") <= math.log2(21) + 1e-9  # capped at log2(R + 1)


def run_value(doc: dict[str, Any], name: str, arm: str) -> Any:
    (value,) = [m["value"] for m in doc["metrics"] if m["name"] == name and m["arm"] == arm]
    return value


def test_no_real_text_in_metrics_json(evaluated):
    run, _ = evaluated
    text = run.metrics_json.read_text(encoding="utf-8")
    assert MARKER.lower() not in text.lower()
    for record in read_records(run.train) + read_records(run.test):
        if MARKER in record.text:
            assert record.text[:40] not in text


def test_edited_release_moves_the_counts_but_never_prints_real_text(evaluated, tmp_path):
    """Through the CLI: a canary pasted into the dp arm's records raises that arm's four canary counts by one; a real
    training record pasted into the no_dp arm is counted as verbatim overlap and a near copy, and never shown."""
    run, before = evaluated
    copy = RunDir(tmp_path / "copy")
    shutil.copytree(run.root, copy.root)
    for arm in ("dp", "no_dp"):  # no adapters: the model attacks are skipped, which keeps this test fast
        shutil.rmtree(copy.adapter(arm))
    canary = read_canaries(copy.canaries)[0]
    real = next(r for r in read_records(copy.train) if not r.unit.startswith("canary-"))
    for arm, text in (("dp", f"Loved it. {canary.text}"), ("no_dp", real.text)):
        rows = read_jsonl(copy.generated(arm))
        rows.append({**rows[0], "index": len(rows), "text": text})
        write_jsonl(copy.generated(arm), rows)

    result = CliRunner().invoke(app, ["evaluate", "--run", str(copy.root), "evaluate.max_records=500"])
    assert result.exit_code == 0, result.output
    assert "MAUVE" in result.output and MARKER not in result.output
    after = read_json(copy.metrics_json)
    rows_before, rows_after = before["tables"]["canary_leakage"]["rows"], after["tables"]["canary_leakage"]["rows"]
    assert rows_after["dp"] == [n + 1 for n in rows_before["dp"]]
    assert rows_after["no_dp"] == rows_before["no_dp"]
    assert after["tables"]["canary_leakage"]["n_synthetic"] == {"dp": 9, "no_dp": 9}
    assert (
        run_value(after, "privacy.canary.secret_hits", "dp")
        == run_value(before, "privacy.canary.secret_hits", "dp") + 1
    )
    assert run_value(after, "privacy.verbatim.rate", "no_dp") > run_value(before, "privacy.verbatim.rate", "no_dp")
    assert (
        next(m for m in after["metrics"] if m["name"] == "privacy.dcr.median_ratio" and m["arm"] == "no_dp")[
            "near_copies"
        ]
        >= 1
    )
    assert MARKER.lower() not in copy.metrics_json.read_text(encoding="utf-8").lower()
    assert all(real.text not in s["text"] for s in after["samples"]["no_dp"])
    assert after["tables"]["mia"]["rows"] == [] and any("not measured" in n for n in after["run"]["notes"])


def test_the_bound_cuts_by_the_rule_training_read(evaluated, tmp_path, tiny_model_dir, monkeypatch):
    """MAUVE at the bound cuts texts by the rule the prepared data were cut by (prepare.json's ``cut_responses``),
    not by the config's: a run prepared before the sentence rule existed is scored at the cut it was trained at.
    Here prepare.json says the other rule than the config, and every cut the stage makes must use prepare.json's."""
    run, _ = evaluated
    copy = RunDir(tmp_path / "copy")
    shutil.copytree(run.root, copy.root)
    for arm in ("dp", "no_dp"):  # no adapters: the model attacks are skipped, which keeps this test fast
        shutil.rmtree(copy.adapter(arm))
    cfg = _cfg(tiny_model_dir, run.root.parent / "reviews.jsonl")
    info = read_json(copy.prepare_json)
    prepared = "token" if cfg.data.cut_responses == "sentence" else "sentence"
    info["cut_responses"] = prepared
    copy.prepare_json.write_text(json.dumps(info), encoding="utf-8")
    rules: list[str] = []
    real_cut = run_module.bounded_text

    def spy(tokenizer, text, max_tokens, cut="token"):
        rules.append(cut)
        return real_cut(tokenizer, text, max_tokens, cut)

    monkeypatch.setattr(run_module, "bounded_text", spy)
    doc = evaluate_run(cfg, copy, progress=False)
    assert rules and set(rules) == {prepared}
    assert any(m["name"] == "fidelity.mauve_bounded" for m in doc["metrics"])


def test_llm_classifier_adds_a_family_for_every_source(evaluated, tmp_path, tiny_model_dir):
    run, doc = evaluated
    assert not [m for m in doc["metrics"] if m["name"].startswith("utility.llm.")]  # off by default
    copy = RunDir(tmp_path / "copy")
    shutil.copytree(run.root, copy.root)
    src = tmp_path / "reviews.jsonl"
    shutil.copy(run.root.parent / "reviews.jsonl", src)
    cfg = _cfg(tiny_model_dir, src, "evaluate.llm_classifier=true", "evaluate.llm_classifier_epochs=1")
    after = evaluate_run(cfg, copy, progress=False)
    llm = {m["arm"]: m for m in after["metrics"] if m["name"] == "utility.llm.rating.accuracy"}
    assert set(llm) == {"real", "dp", "no_dp"}
    assert all(0.0 <= m["value"] <= 1.0 and m["n_train"] > 0 for m in llm.values())
    rows = [r for r in after["tables"]["utility"]["rows"] if r[1] == "llm"]
    assert {r[0] for r in rows} == {"real", "dp", "no_dp"} and all(r[2] == "rating" for r in rows)
    assert MARKER.lower() not in copy.metrics_json.read_text(encoding="utf-8").lower()


# --------------------------------------------------------------------------------------------------------------------
# The pieces


def _training_loss(model: torch.nn.Module, input_ids: list[int], labels: list[int]) -> float:
    """The per-sequence training objective: mean NLL over labelled positions, from one plain forward pass."""
    ids = torch.tensor([input_ids])
    with torch.no_grad():
        logits = model(input_ids=ids).logits[0, :-1]
    target = torch.tensor(labels[1:])
    keep = target != IGNORE_INDEX
    return float(F.cross_entropy(logits[keep].float(), target[keep]))


def test_unit_loss_is_the_training_loss(tiny_llama, tokenizer):
    info = {"system_prompt": "You write reviews.", "max_tokens": 6, "include_title": False}
    units = [
        [Record("A very long review that will be cut at six tokens for sure.", "u1", {"rating": 5})],
        [Record("Short one.", "u2", {"rating": 1}), Record("And a second review here.", "u2", {"rating": 3})],
    ]
    scorer = UnitScorer(tokenizer, units, info, batch_tokens=64)
    assert scorer.common > 0 and scorer.owner == [0, 1, 1]
    got = scorer.losses(tiny_llama)
    for u, records in enumerate(units):
        ex = encode_unit(tokenizer, records, system_prompt="You write reviews.", max_tokens=6)
        assert got[u] == pytest.approx(_training_loss(tiny_llama, ex.input_ids, ex.labels), rel=1e-4)


def test_canary_scorer_ranks_like_the_total_response_nll(tiny_llama, tokenizer):
    """The scorer leaves out the NLL of the tokens every text shares: differences between texts are exact."""
    prompt = encode_prompt(tokenizer, {"rating": 4}, "You write reviews.")
    texts = [f"Nice. I am Ann Lee, 1 Main St. My secret code is {s}." for s in ("012345", "999999", "500000")]
    got = canary_scorer(tiny_llama, tokenizer, prompt, max_tokens=64, batch_tokens=16)(texts)
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]
    total = response_nll(tiny_llama, tokenizer, [prompt] * 3, ids, reduction="sum")
    np.testing.assert_allclose(got - got[0], total - total[0], atol=1e-4)
    assert np.all(got < total)  # the shared beginning's NLL (positive) is not in the score


def test_metric_list_and_json_helpers():
    metrics = MetricList()
    metrics.add("fidelity.mauve", "fidelity", "dp", float("nan"), "mauve", n=np.int64(3))
    metrics.add("fidelity.nn_similarity.mean", "fidelity", "dp", np.float32(0.5), "nn_similarity", "mean")
    assert (
        metrics.entries[0]["value"] is None
        and metrics.entries[0]["n"] == 3
        and metrics.entries[0]["better"] == "higher"
    )
    assert metrics.entries[1]["better"] == "none" and metrics.entries[1]["definition"].endswith("(mean)")
    with pytest.raises(RuntimeError, match="twice"):
        metrics.add("fidelity.mauve", "fidelity", "dp", 0.1, "mauve")
    assert jsonable({"a": [np.inf, np.float64(2.0), (1, np.array([np.nan]))]}) == {"a": [None, 2.0, [1, [None]]]}
    assert (
        sample(list(range(100)), 5, 1, "x")
        == sample(list(range(100)), 5, 1, "x")
        != sample(list(range(100)), 5, 2, "x")
    )
    real = ["A real review that somebody wrote about a phone case."]
    assert_no_real_text({"samples": ["nothing real here, just words that fill"]}, real)
    with pytest.raises(RuntimeError, match="real record"):
        assert_no_real_text({"x": [f"prefix {real[0].upper()} suffix"]}, real)


@pytest.mark.parametrize("module", [collect, model_privacy, prefix_nll, run_module])
def test_docstring_examples(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def test_mauve_at_the_bound_cuts_both_sides_and_nothing_else():
    """With a bound that cuts nothing, MAUVE at the bound is plain MAUVE (same samples, draws and seeds); with one that
    cuts, exactly the texts it shortens are embedded again, on every side: the test split, the arm's long records
    (not its short ones) and the real reference, whose figure then changes."""
    from types import SimpleNamespace

    from dpsynth.evaluate import embeddings
    from dpsynth.evaluate.collect import MetricList
    from dpsynth.evaluate.config import EvaluateConfig
    from dpsynth.evaluate.fidelity_eval import Embeddings, _mauve_bounded
    from dpsynth.evaluate.mauve_metric import mauve_over_draws

    rng = np.random.default_rng(0)
    rec = lambda t: SimpleNamespace(text=t)  # noqa: E731
    inputs = SimpleNamespace(
        test=[rec(f"real test review number {i}. It goes on.") for i in range(40)],
        train=[rec(f"real train review {i}. It goes on.") for i in range(60)],
        synthetic={
            "dp": [{"text": f"short {i}"} for i in range(30)] + [{"text": f"long {i}. More."} for i in range(10)]
        },
    )
    emb = Embeddings(
        train=rng.normal(size=(60, 8)),
        canaries=np.zeros((0, 8)),
        test=rng.normal(size=(40, 8)),
        synthetic={"dp": rng.normal(size=(40, 8))},
    )
    e = EvaluateConfig(mauve_repeats=2)
    metrics = MetricList()
    _mauve_bounded(inputs, emb, e, metrics, [], lambda t: t)
    got = {m["arm"]: m["value"] for m in metrics.entries if m["name"] == "fidelity.mauve_bounded"}
    assert got["dp"] == mauve_over_draws(emb.synthetic["dp"], emb.test, repeats=2, seed=e.seed).mean
    seen: list[str] = []

    def fake_embed(texts, memo=False):
        seen.extend(texts)
        return rng.normal(size=(len(texts), 8))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(embeddings, "embed", fake_embed)
        cut = MetricList()
        _mauve_bounded(inputs, emb, e, cut, [], lambda t: t.split(". ")[0] + "." if ". " in t else t)
    assert sorted(seen) == sorted(
        [f"real test review number {i}." for i in range(40)]
        + [f"long {i}." for i in range(10)]
        + [f"real train review {i}." for i in range(60) if i in _reference_pick(60, 40, e.seed)]
    )
    plain = {m["arm"]: m["value"] for m in metrics.entries}
    after = {m["arm"]: m["value"] for m in cut.entries}
    assert set(after) == {"dp", "real"} and after["real"] != plain["real"]


def _reference_pick(n_train: int, n: int, seed: int) -> set[int]:
    """The real training records MAUVE's real reference draws (fidelity_eval: a seeded permutation's first n)."""
    return set(np.random.default_rng(seed).permutation(n_train)[:n].tolist())
