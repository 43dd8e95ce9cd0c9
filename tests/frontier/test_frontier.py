"""``dpsynth frontier`` end to end on a tiny Llama and the demo data: outputs, ledger charges, resume."""

from __future__ import annotations

import json
import re
from collections import Counter

import pytest

from dpsynth.config import load_config
from dpsynth.errors import ConfigError, DPSynthError
from dpsynth.frontier.config import QUICK_OVERRIDES, parse_level
from dpsynth.frontier.run import run_frontier
from dpsynth.privacy.ledger import Ledger
from dpsynth.rundir import RunDir, read_json, read_jsonl, write_json

KEYS = {"eps", "label", "classifier", "accuracy", "macro_f1", "mauve", "code_agreement", "seconds"}


def _overrides(model_dir):
    return [
        f"model.name={model_dir}",
        "data.demo_records=120",
        "data.max_tokens=24",
        "generate.max_new_tokens=8",
        "frontier.n_synthetic=12",
    ]


def _cfg(model_dir, *extra):
    return load_config(None, [*QUICK_OVERRIDES, *_overrides(model_dir), "frontier.eps=[0, 2, inf]", *extra])


@pytest.fixture(scope="module")
def frontier_run(tmp_path_factory, tiny_model_dir):
    """One sweep for the module, charged to its own ledger; tests that rerun it point DPSYNTH_LEDGER there again
    (the autouse fixture gives every test a fresh ledger), so a second charge would show."""
    with pytest.MonkeyPatch.context() as mp:
        ledger = tmp_path_factory.mktemp("frontier-ledger") / "ledger.sqlite"
        mp.setenv("DPSYNTH_LEDGER", str(ledger))
        out = tmp_path_factory.mktemp("frontier") / "f"
        cfg = _cfg(tiny_model_dir)
        doc = run_frontier(cfg, out, command="dpsynth frontier --quick", progress=False)
    return cfg, out, doc, ledger


def test_outputs_have_the_documented_shape(frontier_run):
    _, out, _, _ = frontier_run
    on_disk = json.loads((out / "frontier.json").read_text())
    assert {"dataset", "generator", "n_private", "n_synthetic", "rows"} <= set(on_disk)
    assert on_disk["n_synthetic"] == 12 and on_disk["generator"] == "finetune"
    rows = on_disk["rows"]
    assert all(set(r) >= KEYS for r in rows)
    assert {r["eps"] for r in rows} == {0.0, 2.0, "inf", "real"}
    # demo codes: rating and category, plus the sentiment derived from the rating; both classifier families
    assert {r["label"] for r in rows} == {"rating", "category", "sentiment"}
    assert {r["classifier"] for r in rows} == {"embedding", "tfidf"}
    # one entry per (row, label, classifier): 5 rows (eps 0, 2, inf, real at n, real at all)
    assert len(rows) == 5 * 3 * 2
    assert len({(r["row"], r["label"], r["classifier"]) for r in rows}) == len(rows)
    real_n = {r["n_train"] for r in rows if r["row"] == "real" and r["label"] == "rating"}
    assert real_n == {12}
    # real rows name their records by position: no copy of private text outside DIR/data
    assert not (out / "rows" / "real" / "records.jsonl").exists()
    assert len(json.loads((out / "rows" / "real" / "real_indices.json").read_text())["indices"]) == 12
    for r in rows:
        assert r["accuracy"] is None or 0 <= r["accuracy"] <= 1
        if r["eps"] == "real":
            assert r["code_agreement"] is None  # an agreement of real records with themselves means nothing
        elif r["label"] != "sentiment" or r["n_train"]:
            assert r["code_agreement"] is None or 0 <= r["code_agreement"] <= 1
        if r["eps"] in (2.0, "inf"):  # a trained row's time, stage by stage, adds up to its total
            parts = (r["seconds_train"], r["seconds_generate"], r["seconds_evaluate"])
            assert all(p > 0 for p in parts) and sum(parts) == pytest.approx(r["seconds"], abs=0.2)
        if r["eps"] == 2.0:
            assert r["dp_logreg_accuracy"] is not None and r["privacy"]["epsilon"] <= 2.0 + 1e-9
        else:
            assert r["dp_logreg_accuracy"] is None
    md = (out / "frontier.md").read_text()
    assert "dpsynth frontier --quick" in md and "| rating | embedding | 2 |" in md
    # the sweep's peak resident set beside its time (this test process's, which loaded the model at least once)
    assert on_disk["peak_rss_gib"] > 0.1 and f"peak resident set {on_disk['peak_rss_gib']:.1f} GiB" in md
    # accuracy with its binomial standard error over the row's test records
    row = next(r for r in rows if r["eps"] == 2.0 and r["label"] == "rating" and r["classifier"] == "embedding")
    se = (row["accuracy"] * (1 - row["accuracy"]) / row["n_test"]) ** 0.5
    assert f"| rating | embedding | 2 | 12 | {row['accuracy']:.3f} ± {se:.3f} |" in md
    # MAUVE's sample a side, which its value depends on, is each row's records against the test split, and named
    n_records = {k: read_json(out / "rows" / k / "row.json")["n_records"] for k in {r["row"] for r in rows}}
    for r in rows:
        assert r["mauve_n"] == (None if r["mauve"] is None else min(n_records[r["row"]], on_disk["n_test"]))
    n = min(12, on_disk["n_test"])
    assert f"draws of {n} records a side ({max(2, n // 10)} k-means buckets" in md
    big = min(n_records["real_all"], on_disk["n_test"])
    # all the training records: named apart when that draw is larger (the note's doctest has that case)
    assert (f"real_all: {big} a side" in md) == (big != n)
    page = (out / "frontier.html").read_text()
    assert page.count("<svg") == 3 and "<script" not in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # nothing fetched: opens offline


def test_each_dp_row_is_one_ledger_release(frontier_run):
    _, out, _, ledger_path = frontier_run
    source = read_json(out / "data" / "prepare.json")["source"]["fingerprint"]
    releases = Ledger(ledger_path).releases(source)
    assert len(releases) == 1  # eps 2 only: eps 0 reads no private data, inf is the non-releasable baseline
    assert releases[0].epsilon <= 2.0 + 1e-9
    assert read_json(out / "rows" / "eps2" / "dp" / "privacy.json")["ledger"]["status"] == "committed"


def test_a_rerun_skips_finished_rows_and_charges_nothing(frontier_run, monkeypatch):
    cfg, out, doc, ledger_path = frontier_run
    monkeypatch.setenv("DPSYNTH_LEDGER", str(ledger_path))
    stamps = {p: p.stat().st_mtime_ns for p in (out / "rows").glob("*/row.json")}
    again = run_frontier(cfg, out, command="dpsynth frontier --quick", progress=False)
    assert {p: p.stat().st_mtime_ns for p in (out / "rows").glob("*/row.json")} == stamps
    # the rows' own time is kept with them; this invocation's is only the scoring of nothing new
    assert again["seconds_rows"] == doc["seconds_rows"] > again["seconds_total"]
    made = {r["row"]: r["seconds"] for r in doc["rows"]}
    assert len(made) == 5 and doc["seconds_rows"] == pytest.approx(sum(made.values()), abs=0.1)
    strip = [{k: v for k, v in r.items() if k != "privacy"} for r in doc["rows"]]
    assert [{k: v for k, v in r.items() if k != "privacy"} for r in again["rows"]] == strip
    source = read_json(out / "data" / "prepare.json")["source"]["fingerprint"]
    assert len(Ledger(ledger_path).releases(source)) == 1


def test_memory_is_given_back_after_each_row(frontier_run, tmp_path, monkeypatch):
    """Each row ends by handing the heap's freed memory back (dpsynth.allocator), so the next row starts from its
    own peak: once per row, after that row's scores are written."""
    import shutil

    from dpsynth.frontier import run as run_module

    cfg, fixture_out, doc, ledger_path = frontier_run
    out = tmp_path / "copy"  # the module's sweep is left as it was for the tests after this one
    shutil.copytree(fixture_out, out)
    monkeypatch.setenv("DPSYNTH_LEDGER", str(ledger_path))
    scored_before_each_call: list[int] = []
    monkeypatch.setattr(
        run_module,
        "release_freed_memory",
        lambda: scored_before_each_call.append(len(list((out / "rows").glob("*/scores.json")))),
    )
    first = doc["rows"][0]["row"]
    (out / "rows" / first / "scores.json").unlink()  # the first row is scored again, the others are kept
    run_frontier(cfg, out, command="dpsynth frontier --quick", progress=False)
    rows = len({r["row"] for r in doc["rows"]})
    assert rows == 5 and scored_before_each_call == [rows] * rows  # the first call after its scores were written


def test_mauve_repeats_rescore_the_kept_rows(frontier_run, tiny_model_dir, tmp_path, monkeypatch):
    """Another ``frontier.mauve_repeats`` scores the finished rows again (mean and sd over the draws) without remaking
    any row or charging anything; the default sweep reports its MAUVE over 5 draws with a standard deviation."""
    import shutil

    _, out, doc, ledger_path = frontier_run
    synthetic = [r for r in doc["rows"] if r["eps"] != "real" and r["mauve"] is not None]
    assert synthetic and all(r["mauve_repeats"] == 5 and r["mauve_sd"] is not None for r in synthetic)
    assert "±" in (out / "frontier.md").read_text()
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    monkeypatch.setenv("DPSYNTH_LEDGER", str(ledger_path))
    stamps = {p: p.stat().st_mtime_ns for p in (copy / "rows").glob("*/row.json")}
    one = run_frontier(_cfg(tiny_model_dir, "frontier.mauve_repeats=1"), copy, progress=False)
    assert {p: p.stat().st_mtime_ns for p in (copy / "rows").glob("*/row.json")} == stamps  # no row remade
    single = [r for r in one["rows"] if r["eps"] != "real" and r["mauve"] is not None]
    assert all(r["mauve_repeats"] == 1 and r["mauve_sd"] is None for r in single)
    assert {r["row"]: r["mauve"] for r in single} != {r["row"]: r["mauve"] for r in synthetic}
    source = read_json(copy / "data" / "prepare.json")["source"]["fingerprint"]
    assert len(Ledger(ledger_path).releases(source)) == 1


def test_the_length_bound_cuts_by_the_prepared_rule(frontier_run, tmp_path, monkeypatch):
    """The frontier's bound cuts by the rule the sweep's data were prepared with (``prepare.json``), not by the
    config's: here prepare.json names the other rule, and every cut the reference makes must use it."""
    import shutil

    from dpsynth.frontier import metrics
    from dpsynth.rundir import RunDir

    cfg, out, _, _ = frontier_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    root = RunDir(copy)
    info = read_json(root.prepare_json)
    prepared = "token" if cfg.data.cut_responses == "sentence" else "sentence"
    info["cut_responses"] = prepared
    write_json(root.prepare_json, info)
    rules: list[str] = []
    real_cut = metrics.bounded_text

    def spy(tokenizer, text, max_tokens, cut="token"):
        rules.append(cut)
        return real_cut(tokenizer, text, max_tokens, cut)

    monkeypatch.setattr(metrics, "bounded_text", spy)
    ref = metrics.load_reference(cfg, root)
    assert rules and set(rules) == {prepared}
    assert len(ref.test_emb_bounded) == len(ref.test_texts)


def test_mauve_at_the_length_bound(frontier_run, tmp_path, monkeypatch):
    """Every measured row also has MAUVE with both sides cut to generate.max_new_tokens (8 tokens here, the demo's
    real reviews are longer): the real rows' records and the test split are cut, so their two figures differ; the
    table names the budget. Scores cached before the column existed are made again on a rerun, no row remade."""
    import shutil

    cfg, out, doc, ledger_path = frontier_run
    assert doc["length_bound"] == {"tokens": 8, "cut": cfg.data.cut_responses}
    measured = [r for r in doc["rows"] if r["mauve"] is not None]
    assert measured and all(0 < r["mauve_bounded"] <= 1 and r["mauve_bounded_sd"] is not None for r in measured)
    assert all(r["mauve_bounded"] != r["mauve"] for r in measured if r["eps"] == "real")
    md = (out / "frontier.md").read_text()
    assert "MAUVE at the bound" in md and "cut to 8 tokens" in md
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    monkeypatch.setenv("DPSYNTH_LEDGER", str(ledger_path))
    for path in (copy / "rows").glob("*/scores.json"):  # as a sweep scored before 2026-12-05 evening holds them
        cached = read_json(path)
        for e in cached["entries"]:
            del e["mauve_bounded"], e["mauve_bounded_sd"]
        cached["fingerprint"] = cached["fingerprint"].replace("/mauve_bounded", "")  # its scores key then
        write_json(path, cached)
    stamps = {p: p.stat().st_mtime_ns for p in (copy / "rows").glob("*/row.json")}
    again = run_frontier(cfg, copy, progress=False)
    assert {p: p.stat().st_mtime_ns for p in (copy / "rows").glob("*/row.json")} == stamps  # no row remade
    key = ("row", "label", "classifier")
    first = {tuple(r[k] for k in key): r["mauve_bounded"] for r in doc["rows"]}
    assert {tuple(r[k] for k in key): r["mauve_bounded"] for r in again["rows"]} == first  # made again, the same


def test_row_mauve_cuts_only_what_exceeds_the_bound(monkeypatch):
    """Texts within the bound keep their vectors (nothing embedded again), so with an identity bound the two MAUVE
    figures are one; only the texts the bound changes are embedded again."""
    import numpy as np

    from dpsynth.evaluate import embeddings
    from dpsynth.frontier import metrics

    rng = np.random.default_rng(0)
    test = rng.normal(size=(60, 8))
    ref = metrics.Reference(
        labels=[],
        domains={},
        test_texts=[],
        test_labels=[],
        test_emb=test,
        train_texts=[],
        train_labels=[],
        train_emb=test,
        unit_contribution=1,
        bound=lambda t: t,
        test_emb_bounded=test,
    )
    cfg = load_config(None, ["frontier.mauve_repeats=2"])
    texts = [f"text {i}" for i in range(50)]
    emb = rng.normal(size=(50, 8))
    calls: list[list[str]] = []
    monkeypatch.setattr(embeddings, "embed", lambda t, memo=False: calls.append(list(t)) or np.zeros((len(t), 8)))
    full, sd, bounded, bounded_sd = metrics._row_mauve(cfg, ref, {"key": "eps4"}, texts, emb, memo=False)
    assert calls == [] and (bounded, bounded_sd) == (full, sd)
    ref.bound = lambda t: t[:6]  # "text 1x" -> "text 1": the two-digit texts change
    metrics._row_mauve(cfg, ref, {"key": "eps4"}, texts, emb, memo=False)
    assert calls == [[t[:6] for t in texts if len(t) > 6]]


def test_evaluate_settings_rescore_the_kept_rows(frontier_run, tiny_model_dir, tmp_path, monkeypatch):
    """Another ``evaluate.max_records`` (fewer real test records here) keeps every row, trained or not, and scores it
    again against the new sample; the same settings once more keep the new scores; back at the old settings the rows
    score as first. Rows made before row.json named their evaluate section are matched through a fine-tuned row's
    run config or the sweep's previous config, and named from then on."""
    import shutil

    _, out, doc, ledger_path = frontier_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    monkeypatch.setenv("DPSYNTH_LEDGER", str(ledger_path))
    for key in ("eps2", "eps0", "real"):
        done = copy / "rows" / key / "row.json"
        info = read_json(done)
        assert info["evaluate"]["max_records"] == 60  # --quick's sample, as made
        # as rows made before 2026-12-04 have it: a fine-tuned row's config.yaml still says how it was made; eps 0
        # and real rows have none, and the sweep's previous DIR/config.yaml does
        del info["evaluate"]
        write_json(done, info)
    assert not (copy / "rows" / "eps0" / "config.yaml").exists()

    def made() -> dict:  # what a remade row would write again: its records (or real positions) and its arm's log
        files = [*(copy / "rows").glob("*/records.jsonl"), *(copy / "rows").glob("*/real_indices.json")]
        files += [*(copy / "rows").glob("*/*/train_log.jsonl")]
        return {p: p.stat().st_mtime_ns for p in files}

    stamps = made()
    assert len(stamps) == 5 + 2  # eps0, eps2, inf, real, real_all; two trained arms
    smaller = run_frontier(_cfg(tiny_model_dir, "evaluate.max_records=7"), copy, progress=False)
    assert made() == stamps  # no row remade
    assert all(read_json(p)["evaluate"]["max_records"] == 60 for p in (copy / "rows").glob("*/row.json"))
    assert doc["n_test"] > 7 and smaller["n_test"] == 7
    assert {r["n_test"] for r in smaller["rows"] if r["label"] == "rating"} == {7}
    scores = {p: p.stat().st_mtime_ns for p in (copy / "rows").glob("*/scores.json")}
    again = run_frontier(_cfg(tiny_model_dir, "evaluate.max_records=7"), copy, progress=False)
    assert {p: p.stat().st_mtime_ns for p in (copy / "rows").glob("*/scores.json")} == scores  # kept this time
    assert [r["accuracy"] for r in again["rows"]] == [r["accuracy"] for r in smaller["rows"]]
    back = run_frontier(_cfg(tiny_model_dir), copy, progress=False)
    assert made() == stamps
    assert back["n_test"] == doc["n_test"]
    scored = ("row", "label", "classifier", "accuracy", "macro_f1", "mauve", "mauve_sd", "code_agreement", "n_test")
    assert [[r[k] for k in scored] for r in back["rows"]] == [[r[k] for k in scored] for r in doc["rows"]]
    source = read_json(copy / "data" / "prepare.json")["source"]["fingerprint"]
    assert len(Ledger(ledger_path).releases(source)) == 1  # nothing charged again


def test_a_crash_while_scoring_again_remakes_no_row(frontier_run, tiny_model_dir, tmp_path, monkeypatch):
    """Rows made before row.json named their evaluate section are named before the sweep's config is overwritten: a
    crash in the scoring that follows leaves a rerun able to keep them."""
    import shutil

    from dpsynth.frontier import run as run_module

    _, out, _, ledger_path = frontier_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    monkeypatch.setenv("DPSYNTH_LEDGER", str(ledger_path))
    for key in ("eps0", "real"):
        done = copy / "rows" / key / "row.json"
        write_json(done, {k: v for k, v in read_json(done).items() if k != "evaluate"})
    files = [*(copy / "rows").glob("*/records.jsonl"), *(copy / "rows").glob("*/real_indices.json")]
    records = {p: p.stat().st_mtime_ns for p in files}

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(run_module, "score_row", crash)
    with pytest.raises(KeyboardInterrupt):
        run_frontier(_cfg(tiny_model_dir, "evaluate.max_records=7"), copy, progress=False)
    monkeypatch.undo()
    monkeypatch.setenv("DPSYNTH_LEDGER", str(ledger_path))
    # the first row's scoring crashed: the later real row was named all the same
    assert read_json(copy / "rows" / "real" / "row.json")["evaluate"]["max_records"] == 60
    run_frontier(_cfg(tiny_model_dir, "evaluate.max_records=9"), copy, progress=False)
    assert {p: p.stat().st_mtime_ns for p in files} == records  # none remade


def test_a_row_is_kept_only_under_the_evaluate_section_it_names(tiny_model_dir, tmp_path):
    """:func:`kept_evaluate` matches a row through its own evaluate section, not any: a row whose fingerprint was
    made under other training settings is not kept whatever evaluate section it names."""
    from dpsynth.frontier.fingerprint import fingerprint, kept_evaluate, scores_key
    from dpsynth.frontier.spec import RowSpec

    row = RowSpec("eps4", 4.0)
    cfg = _cfg(tiny_model_dir)
    made = cfg.evaluate.model_dump(mode="json")
    (tmp_path / "broken.yaml").write_text("evaluate: [unclosed")
    old = {"fingerprint": fingerprint(cfg, row)}  # a row that names no evaluate section: its sweep's config does
    later = _cfg(tiny_model_dir, "evaluate.max_records=999")
    assert kept_evaluate(later, row, old, tmp_path / "broken.yaml", sweep_evaluate=made) == made
    assert kept_evaluate(later, row, old, tmp_path / "broken.yaml") is None  # unreadable: remade, not a crash
    # the sweep's previous evaluate section keeps a row only when nothing else changed
    other = _cfg(tiny_model_dir, "evaluate.max_records=999", "train.learning_rate=0.005")
    assert kept_evaluate(other, row, old, tmp_path / "broken.yaml", sweep_evaluate=made) is None
    info = {"fingerprint": fingerprint(cfg, row), "evaluate": made}
    now = _cfg(tiny_model_dir, "evaluate.max_records=999", "evaluate.seed=3")
    assert kept_evaluate(now, row, info, tmp_path / "none.yaml") == made
    assert kept_evaluate(_cfg(tiny_model_dir, "train.learning_rate=0.005"), row, info, tmp_path / "none.yaml") is None
    assert kept_evaluate(now, row, {"fingerprint": info["fingerprint"]}, tmp_path / "none.yaml") is None  # nothing says
    bad = {**info, "evaluate": {**made, "not_a_key": 1}}
    assert kept_evaluate(now, row, bad, tmp_path / "none.yaml") is None
    base = scores_key(cfg, "fp", made)
    assert scores_key(now, "fp", made) != base and scores_key(cfg, "fp", None) == base
    assert scores_key(_cfg(tiny_model_dir, "evaluate.max_records=998"), "fp", made) != scores_key(now, "fp", made)


def test_mauve_over_draws_starts_from_the_single_draw():
    """Draw i subsamples with seed ``seed + i`` and clusters with k-means seed ``25 + i``; one draw is the figure of
    earlier sweeps; several give their mean and standard deviation."""
    import numpy as np

    from dpsynth.evaluate.mauve_metric import mauve_score
    from dpsynth.frontier.metrics import _mauve

    rng = np.random.default_rng(0)
    test = rng.normal(size=(60, 8)).astype(np.float32)
    synth = (rng.normal(size=(80, 8)) + 0.7).astype(np.float32)

    def draw(i: int) -> float:
        pick = np.random.default_rng(3 + i)
        p, q = synth[pick.choice(80, 60, replace=False)], test[pick.choice(60, 60, replace=False)]
        return mauve_score(p, q, seed=25 + i)

    one, sd = _mauve(synth, test, seed=3, repeats=1)
    assert sd is None and one == pytest.approx(draw(0))
    values = [draw(i) for i in range(3)]
    mean, sd3 = _mauve(synth, test, seed=3, repeats=3)
    assert mean == pytest.approx(np.mean(values)) and sd3 == pytest.approx(np.std(values, ddof=1))
    assert len(set(values)) > 1  # the draws differ: the spread is what the sd reports


def test_another_configuration_is_refused_not_mixed(frontier_run, tiny_model_dir):
    _, out, _, _ = frontier_run
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()}
    for change in ("train.learning_rate=0.005", "privacy.max_grad_norm=0.5"):
        with pytest.raises(DPSynthError, match="two configurations in one frontier"):
            run_frontier(_cfg(tiny_model_dir, change), out, progress=False)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*") if p.is_file()} == before  # nothing touched


def test_the_real_all_row_comes_and_goes_alone(frontier_run, tiny_model_dir, tmp_path, monkeypatch):
    """frontier.real_all toggled on a finished sweep adds or drops that row and remakes no other (before 2026-12-07
    every row's fingerprint held the key, so adding the real-all row generated every row again)."""
    import shutil

    _, out, _, ledger_path = frontier_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    monkeypatch.setenv("DPSYNTH_LEDGER", str(ledger_path))
    stamps = {p: p.stat().st_mtime_ns for p in (copy / "rows").glob("*/row.json") if p.parent.name != "real_all"}
    assert len(stamps) == 4
    doc = run_frontier(_cfg(tiny_model_dir, "frontier.real_all=false"), copy, progress=False)
    assert {r["row"] for r in doc["rows"]} == {"eps0", "eps2", "epsinf", "real"}
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    doc = run_frontier(_cfg(tiny_model_dir), copy, progress=False)
    assert "real_all" in {r["row"] for r in doc["rows"]}
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_more_records_reuse_the_trained_rows(frontier_run, tiny_model_dir, tmp_path, monkeypatch):
    """frontier.n_synthetic (or sampling) changed in a copy of a finished sweep: the trained rows generate again from
    their kept arms (no training, no new ledger charge: post-processing), the other rows are remade, at the new N."""
    import shutil

    from dpsynth.train import stage

    _, out, _, ledger_path = frontier_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    monkeypatch.setenv("DPSYNTH_LEDGER", str(ledger_path))
    monkeypatch.setattr(stage, "train_arm", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained again")))
    doc = run_frontier(
        _cfg(tiny_model_dir, "frontier.n_synthetic=16", "generate.temperature=0.8"), copy, progress=False
    )
    assert doc["n_synthetic"] == 16
    for key in ("eps0", "eps2", "epsinf", "real"):
        made = read_json(copy / "rows" / key / "row.json")
        assert made["n_records"] == 16, key
    assert read_json(copy / "rows" / "eps2" / "dp" / "privacy.json") == read_json(
        out / "rows" / "eps2" / "dp" / "privacy.json"
    )
    source = read_json(copy / "data" / "prepare.json")["source"]["fingerprint"]
    assert len(Ledger(ledger_path).releases(source)) == 1
    first = read_json(out / "rows" / "eps2" / "row.json")
    made = read_json(copy / "rows" / "eps2" / "row.json")
    assert made["reused_training"] is True and made["seconds"]["train"] == first["seconds"]["train"]

    # a row that crashed while generating again (no row.json) still refuses other training settings
    (copy / "rows" / "eps2" / "row.json").unlink()
    with pytest.raises(DPSynthError, match=r"other settings of train\.learning_rate"):
        run_frontier(_cfg(tiny_model_dir, "frontier.n_synthetic=16", "train.learning_rate=0.005"), copy, progress=False)
    # ...and with the same settings generates again, reporting the time its arm cost when trained (kept beside the
    # arm: the crashed row has no row.json to carry it), not the moment it took to find it
    stamp = copy / "rows" / "eps2" / "train_seconds.json"
    assert read_json(stamp)["seconds"] == pytest.approx(first["seconds"]["train"], abs=0.06)
    write_json(stamp, {"seconds": 1234.5})
    run_frontier(_cfg(tiny_model_dir, "frontier.n_synthetic=16", "generate.temperature=0.8"), copy, progress=False)
    assert read_json(copy / "rows" / "eps2" / "row.json")["seconds"]["train"] == 1234.5


def test_draws_score_each_set_of_records_on_its_own(frontier_run, tiny_model_dir, tmp_path, monkeypatch):
    """frontier.draws=2 in a copy of a finished sweep: each generated row writes two sets of n_synthetic records from
    its kept arm (no training, no charge) and reports their mean, each draw's figure beside it; real rows are one draw
    and keep their scores."""
    import shutil

    from dpsynth.frontier import metrics as metrics_module
    from dpsynth.train import stage

    _, out, doc1, ledger_path = frontier_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    monkeypatch.setenv("DPSYNTH_LEDGER", str(ledger_path))
    monkeypatch.setattr(stage, "train_arm", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained again")))
    seen: dict[str, list[tuple[list[str], bool]]] = {}
    original = metrics_module.score_row

    def spy(cfg, ref, row, records, **kw):
        seen.setdefault(row["key"], []).append(([r["text"] for r in records], kw.get("dp_logreg", True)))
        return original(cfg, ref, row, records, **kw)

    monkeypatch.setattr(metrics_module, "score_row", spy)
    doc = run_frontier(_cfg(tiny_model_dir, "frontier.draws=2"), copy, progress=False)
    assert doc["draws"] == 2
    for key in ("eps0", "eps2", "epsinf"):
        assert read_json(copy / "rows" / key / "row.json")["n_records"] == 24, key  # 2 draws of n_synthetic = 12
    assert set(seen) == {"eps0", "eps2", "epsinf"}  # the real row's scores were kept
    for key, slices in seen.items():
        texts = [r["text"] for r in read_jsonl(copy / "rows" / key / "records.jsonl")]
        assert [s for s, _ in slices] == [texts[:12], texts[12:]], key  # two disjoint slices, in order
        assert [flag for _, flag in slices] == [True, False], key  # the DP-LR reads no synthetic record: once
    source = read_json(copy / "data" / "prepare.json")["source"]["fingerprint"]
    assert len(Ledger(ledger_path).releases(source)) == 1
    scored = 0
    for r in doc["rows"]:
        if r["eps"] == "real":
            assert "draws" not in r and r in doc1["rows"]
            continue
        assert r["draws"] == 2 and len(r["status_draws"]) == 2 and len(r["mauve_draws"]) == 2
        assert r["mauve"] == pytest.approx(sum(r["mauve_draws"]) / 2)
        # a draw with no training record for a label (the DP codes' fresh noise can give twelve neutral ratings:
        # no sentiment) has no accuracy; its status says so, and the row's mean is withheld rather than one draw's
        empty = [s == "empty" for s in r["status_draws"]]
        if all(empty):
            assert "accuracy_draws" not in r and r["accuracy"] is None
            continue
        assert [a is None for a in r["accuracy_draws"]] == empty
        assert r["accuracy"] == (None if any(empty) else pytest.approx(sum(r["accuracy_draws"]) / 2))
        scored += not any(empty)
    assert scored >= 6  # eps inf's codes are exact: its six entries are scored in both draws whatever the noise
    md = (copy / "frontier.md").read_text()
    assert "in each of 2 draws" in md and "(draws " in md


def test_draws_leave_one_draw_sweeps_alone_and_refuse_pe(tiny_model_dir, tmp_path):
    from dpsynth.errors import ConfigError
    from dpsynth.frontier.fingerprint import _view, fingerprint
    from dpsynth.frontier.spec import RowSpec

    row = RowSpec("eps4", 4.0)
    assert not [k for k, _ in _view(_cfg(tiny_model_dir), row, 50) if "draws" in k]  # finished sweeps keep rows
    assert fingerprint(_cfg(tiny_model_dir, "frontier.draws=2"), row) != fingerprint(_cfg(tiny_model_dir), row)
    real = RowSpec("real", "real", real_n=16)
    assert fingerprint(_cfg(tiny_model_dir, "frontier.draws=2"), real) == fingerprint(_cfg(tiny_model_dir), real)
    with pytest.raises(ConfigError, match=r"frontier\.draws"):
        run_frontier(_cfg(tiny_model_dir, "generator=pe", "frontier.eps=[0, 2]", "frontier.draws=2"), tmp_path / "f")


def test_the_command_line_resumes_the_same_sweep(frontier_run, tiny_model_dir, monkeypatch):
    """`dpsynth frontier --quick --eps ...` builds the same configuration as the API call: every row is skipped, the
    outputs are rewritten and their paths printed on stdout."""
    from typer.testing import CliRunner

    from dpsynth.cli import app

    _, out, _, ledger_path = frontier_run
    monkeypatch.setenv("DPSYNTH_LEDGER", str(ledger_path))
    stamps = {p: p.stat().st_mtime_ns for p in (out / "rows").glob("*/row.json")}
    args = ["frontier", "--out", str(out), "--quick", "--eps", "0,2,inf", "--quiet", *_overrides(tiny_model_dir)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert f"json: {out / 'frontier.json'}" in result.stdout and "row eps2:" in result.stdout
    assert {p: p.stat().st_mtime_ns for p in (out / "rows").glob("*/row.json")} == stamps
    source = read_json(out / "data" / "prepare.json")["source"]["fingerprint"]
    assert len(Ledger(ledger_path).releases(source)) == 1


def test_levels_parse():
    assert [parse_level(x) for x in ("0", "1", "inf", 8)] == [0.0, 1.0, "inf", 8.0]
    with pytest.raises(ValueError):
        parse_level("-1")
    assert load_config(None, ["frontier.eps=0,4,inf"]).frontier.eps == [0.0, 4.0, "inf"]


def test_the_dataset_is_named_with_its_folder():
    from dpsynth.frontier.run import _dataset_name

    assert _dataset_name({"source": {"path": "../shared/data/yelp/dev.csv.gz"}}) == "yelp/dev.csv.gz"
    assert _dataset_name({"source": {"path": "reviews.csv"}}) == "reviews.csv"
    assert _dataset_name({}) == "demo"


def test_keys_that_cannot_change_a_row_leave_its_fingerprint_alone(tiny_model_dir):
    from dpsynth.frontier.fingerprint import _fingerprint, _view, fingerprint, fingerprints
    from dpsynth.frontier.spec import RowSpec

    row = RowSpec("eps4", 4.0)
    base = fingerprint(_cfg(tiny_model_dir), row)
    assert fingerprint(_cfg(tiny_model_dir, "tracking.mlflow=sqlite:///x.db"), row) == base
    assert fingerprint(_cfg(tiny_model_dir, "pe.iterations=7"), row) == base
    assert fingerprint(_cfg(tiny_model_dir, "train.prefix_cache_dir=/tmp/cache"), row) == base
    assert fingerprint(_cfg(tiny_model_dir, "train.distributed=true", "train.nproc_per_node=4"), row) == base
    assert fingerprint(_cfg(tiny_model_dir, "evaluate.mauve_repeats=2"), row) == base  # the run report's, not ours
    # the privacy attacks' arithmetic: no frontier row runs an attack, and sweeps made before the key keep their rows
    for precision in ("auto", "float32", "bfloat16"):
        assert fingerprint(_cfg(tiny_model_dir, f"evaluate.precision={precision}"), row) == base
    assert not [k for k, _ in _view(_cfg(tiny_model_dir), row, 50) if "precision" in k and "evaluate" in k]
    # LoRA's A matrices frozen: a DP row's setting only (the non-DP arm trains both; eps 0 and real train nothing),
    # and off it is the training before the key existed
    assert fingerprint(_cfg(tiny_model_dir, "train.lora.freeze_a=false"), row) == base
    assert not [k for k, _ in _view(_cfg(tiny_model_dir), row, 50) if "freeze_a" in k]
    assert fingerprint(_cfg(tiny_model_dir, "train.lora.freeze_a=true"), row) != base
    # the whole vocabulary is the model as before model.vocabulary existed; a cut one is another model
    assert fingerprint(_cfg(tiny_model_dir, "model.vocabulary=full"), row) == base
    assert not [k for k, _ in _view(_cfg(tiny_model_dir), row, 50) if "vocabulary" in k]
    assert fingerprint(_cfg(tiny_model_dir, "model.vocabulary=ascii"), row) != base
    for other in (RowSpec("epsinf", "inf"), RowSpec("eps0", 0.0), RowSpec("real", "real", real_n=16)):
        frozen = fingerprint(_cfg(tiny_model_dir, "train.lora.freeze_a=true"), other)
        assert frozen == fingerprint(_cfg(tiny_model_dir), other), other
    # checkpoint spacing: any value reads as the old default (50), so rows finished before it changed stay valid;
    # a row made then with another value is matched by the second fingerprint (its value as configured)
    for every in (1, 7, 50):
        assert fingerprint(_cfg(tiny_model_dir, f"train.checkpoint_every={every}"), row) == base
    seven = fingerprints(_cfg(tiny_model_dir, "train.checkpoint_every=7"), row)
    assert seven[0] == base and seven[1] != base
    legacy = _fingerprint(_cfg(tiny_model_dir), row, checkpoint_every=50, real_all=False)
    assert fingerprints(_cfg(tiny_model_dir, "train.checkpoint_every=50"), row) == (base, legacy)
    # the real-all row's presence changes no other row; a row made under real_all=false before the key was pinned
    # (its fingerprint spelled false) is matched by the legacy spelling
    for other in (row, RowSpec("epsinf", "inf"), RowSpec("real", "real", real_n=12), RowSpec("eps0", 0.0)):
        assert fingerprint(_cfg(tiny_model_dir, "frontier.real_all=false"), other) == fingerprint(
            _cfg(tiny_model_dir), other
        )
    assert legacy != base
    # the spelling itself: rows made before the pin spelled the configured value, the default True for most
    assert ("frontier.real_all.", "True") in _view(_cfg(tiny_model_dir, "frontier.real_all=false"), row, 50)
    assert ("frontier.real_all.", "False") in _view(_cfg(tiny_model_dir), row, 50, real_all=False)
    # ...while anything a fine-tuned row reads does change it
    assert fingerprint(_cfg(tiny_model_dir, "train.learning_rate=0.005"), row) != base
    assert fingerprint(_cfg(tiny_model_dir, "generator=pe"), row) != base
    # the non-DP arm's batch changes the non-DP row alone; unset, it leaves every fingerprint as it was before it
    assert fingerprint(_cfg(tiny_model_dir, "train.no_dp_batch_size=4"), row) == base
    inf = RowSpec("epsinf", "inf")
    assert fingerprint(_cfg(tiny_model_dir, "train.no_dp_batch_size=4"), inf) != fingerprint(_cfg(tiny_model_dir), inf)
    # likewise its learning rate
    assert fingerprint(_cfg(tiny_model_dir, "train.no_dp_learning_rate=0.5"), row) == base
    assert fingerprint(_cfg(tiny_model_dir, "train.no_dp_learning_rate=0.5"), inf) != fingerprint(
        _cfg(tiny_model_dir), inf
    )
    # and its LoRA modules
    wide = "train.no_dp_target_modules=[q_proj,k_proj,v_proj,o_proj]"
    assert fingerprint(_cfg(tiny_model_dir, wide), row) == base
    assert fingerprint(_cfg(tiny_model_dir, wide), inf) != fingerprint(_cfg(tiny_model_dir), inf)
    qv = "train.no_dp_target_modules=[v_proj,q_proj]"  # the DP arm's modules (in any order): the default
    assert fingerprint(_cfg(tiny_model_dir, qv), inf) == fingerprint(_cfg(tiny_model_dir), inf)
    same = f"train.no_dp_batch_size={_cfg(tiny_model_dir).train.batch_size}"  # equal to the DP batch: the default
    assert fingerprint(_cfg(tiny_model_dir, same), inf) == fingerprint(_cfg(tiny_model_dir), inf)
    # flattened codes change the trained rows, not eps 0 (uniform codes anyway) or real; 1 is the old draw
    assert fingerprint(_cfg(tiny_model_dir, "generate.code_power=1.0"), row) == base
    assert fingerprint(_cfg(tiny_model_dir, "generate.code_power=0.5"), row) != base
    flat_rating = _cfg(tiny_model_dir, "generate.code_power={rating: 0}")
    assert fingerprint(flat_rating, inf) != fingerprint(_cfg(tiny_model_dir), inf)
    for other in (RowSpec("eps0", 0.0), RowSpec("real", "real", real_n=-1)):
        flat = _cfg(tiny_model_dir, "generate.code_power=0")
        assert fingerprint(flat, other) == fingerprint(_cfg(tiny_model_dir), other)
    # best-of-m: one candidate (the default) is the path before the key existed; more change every generated row
    assert fingerprint(_cfg(tiny_model_dir, "generate.candidates=1", "generate.select_by=[well_formed]"), row) == base
    assert fingerprint(_cfg(tiny_model_dir, "generate.candidates=2"), row) != base
    two = _cfg(tiny_model_dir, "generate.candidates=2")
    assert fingerprint(two, RowSpec("eps0", 0.0)) != fingerprint(_cfg(tiny_model_dir), RowSpec("eps0", 0.0))
    real = RowSpec("real", "real", real_n=-1)
    assert fingerprint(two, real) == fingerprint(_cfg(tiny_model_dir), real)
    # guidance: 1 (off) is sampling as before the keys existed; on, it changes every generated row but not real
    assert (
        fingerprint(_cfg(tiny_model_dir, "generate.guidance_scale=1", "generate.guidance_codes=[rating]"), row) == base
    )
    guided = _cfg(tiny_model_dir, "generate.guidance_scale=2", "generate.engine=hf")
    assert fingerprint(guided, row) != base
    assert fingerprint(guided, RowSpec("eps0", 0.0)) != fingerprint(
        _cfg(tiny_model_dir, "generate.engine=hf"), RowSpec("eps0", 0.0)
    )
    assert fingerprint(guided, real) == fingerprint(_cfg(tiny_model_dir, "generate.engine=hf"), real)
    by_rating = _cfg(
        tiny_model_dir, "generate.guidance_scale=2", "generate.engine=hf", "generate.guidance_codes=[rating]"
    )
    assert fingerprint(by_rating, row) != fingerprint(guided, row)
    # CTranslate2's weights (float32 by default since 2026-12-05): a row it generates changes with them; a row it does
    # not generate (real, the hf or vllm engine, guided sampling) reads as int8, the default its old sweeps carry
    old_q = _cfg(tiny_model_dir, "generate.ctranslate2_quantization=int8")
    assert fingerprint(old_q, row) != base
    for other_row, extra in ((real, ()), (row, ("generate.engine=hf",)), (row, ("generate.engine=vllm",))):
        assert fingerprint(_cfg(tiny_model_dir, *extra), other_row) == fingerprint(
            _cfg(tiny_model_dir, *extra, "generate.ctranslate2_quantization=int8"), other_row
        )
    # CTranslate2 replicas: auto (unset) is not in the view, so sweeps from before the key keep their rows; a set
    # number draws other random numbers, so it is a new row
    assert not [k for k, _ in _view(_cfg(tiny_model_dir), row, 50) if "replicas" in k]
    assert fingerprint(_cfg(tiny_model_dir, "generate.ctranslate2_replicas=2"), row) != base
    # the token cut is the rule from before data.cut_responses existed: not in the view (nor in the prepared data's
    # fingerprint), so sweeps made then keep their data and rows when rerun with data.cut_responses=token
    from dpsynth.frontier.run import _data_fingerprint

    token = _cfg(tiny_model_dir, "data.cut_responses=token")
    assert not [k for k, _ in _view(token, row, 50) if "cut_responses" in k]
    # the prepared data's fingerprint of the quick settings as made before the key existed (at e2ade12)
    old_spelling = load_config(None, [*QUICK_OVERRIDES, "data.cut_responses=token"])
    assert _data_fingerprint(old_spelling) == "6762404bc5c3cffd"
    sentence = _cfg(tiny_model_dir, "data.cut_responses=sentence")
    assert fingerprint(sentence, row) != fingerprint(token, row)
    assert _data_fingerprint(sentence) != _data_fingerprint(token)


def test_a_warm_start_is_fingerprinted_by_its_weights_and_absent_when_unset(tmp_path, tiny_model_dir):
    from dpsynth.frontier.fingerprint import _view, fingerprint
    from dpsynth.frontier.spec import RowSpec

    row = RowSpec("eps4", 4.0)
    # unset, the key is not in the view at all: fingerprints of sweeps made before it existed still match
    assert not [k for k, _ in _view(_cfg(tiny_model_dir), row, 50) if "init_adapter" in k]
    a, b = tmp_path / "a", tmp_path / "b"
    for folder, payload in ((a, b"one"), (b, b"two")):
        folder.mkdir()
        (folder / "adapter_config.json").write_text("{}")
        (folder / "adapter_model.safetensors").write_bytes(payload)
    with_a = fingerprint(_cfg(tiny_model_dir, f"train.init_adapter={a}"), row)
    assert with_a != fingerprint(_cfg(tiny_model_dir), row)
    assert with_a != fingerprint(_cfg(tiny_model_dir, f"train.init_adapter={b}"), row)
    moved = tmp_path / "moved"
    a.rename(moved)  # where it lies does not matter, its weights do
    assert fingerprint(_cfg(tiny_model_dir, f"train.init_adapter={moved}"), row) == with_a
    (moved / "adapter_model.safetensors").write_bytes(b"retrained")
    assert fingerprint(_cfg(tiny_model_dir, f"train.init_adapter={moved}"), row) != with_a


def test_a_row_trained_from_other_warm_start_weights_is_refused(tmp_path, tiny_model_dir):
    """Same path, retrained adapter: the row's arm began from the old weights, so it is not kept as the new one's."""
    from dpsynth.frontier.rows import check_reuse, row_config
    from dpsynth.frontier.spec import RowSpec
    from dpsynth.models.convert import adapter_digest
    from dpsynth.rundir import RunDir, write_text

    folder = tmp_path / "warm"
    folder.mkdir()
    (folder / "adapter_config.json").write_text("{}")
    (folder / "adapter_model.safetensors").write_bytes(b"public")
    cfg = _cfg(tiny_model_dir, f"train.init_adapter={folder}")
    root, row = RunDir(tmp_path / "f"), RowSpec("eps2", 2.0)
    run = RunDir(root.root / "rows" / row.key)
    run.root.mkdir(parents=True)
    write_text(run.config, row_config(cfg, row, prefix_cache_dir=root.root / "prefix_cache").to_yaml())
    run.privacy_json("dp").parent.mkdir()
    write_json(run.privacy_json("dp"), {"init_adapter": {"digest": adapter_digest(folder)}})
    check_reuse(cfg, root, row)  # the same weights: kept (and generated again)
    (folder / "adapter_model.safetensors").write_bytes(b"retrained")
    with pytest.raises(DPSynthError, match=r"train\.init_adapter \(its dp arm started from other weights\)"):
        check_reuse(cfg, root, row)


def test_the_eps0_row_generates_from_the_warm_start(frontier_run, tiny_model_dir, tmp_path, monkeypatch):
    from dpsynth.frontier import rows as rows_module
    from dpsynth.generate import engine
    from dpsynth.rundir import RunDir

    _, out, _, _ = frontier_run
    seen: list[object] = []

    def fake(model_cfg, adapter_dir, codes, *_a, **_k):
        seen.append(adapter_dir)
        return ["A title\nSome text." for _ in codes]

    monkeypatch.setattr(engine, "generate_from_codes", fake)
    for extra in ((), (f"train.init_adapter={tmp_path}",)):
        made = rows_module._prompted_rows(_cfg(tiny_model_dir, *extra), RunDir(out), progress=False)
        assert len(made) == _cfg(tiny_model_dir).frontier.n_synthetic
    assert seen == [None, tmp_path]


def test_the_table_says_which_model_eps0_is(frontier_run):
    from dpsynth.frontier.output import markdown

    _, _, doc, _ = frontier_run
    assert doc["init_adapter"] is None
    assert "- eps 0: the pretrained model prompted" in markdown(doc)
    warm = markdown({**doc, "init_adapter": "runs/public/no_dp/adapter"})
    assert "starts from the public warm start runs/public/no_dp/adapter" in warm
    assert "the pretrained model prompted" not in warm
    assert "merged_warm_start" not in doc and "merged into its weights" not in markdown(doc)
    merged = markdown({**doc, "merged_warm_start": {"adapter": "runs/public-all/no_dp/adapter"}})
    assert "a warm start merged into its weights, runs/public-all/no_dp/adapter" in merged
    # the processor it ran on (a time says little without it); older sweeps did not record one
    from dpsynth import machine

    assert doc["machine"] == machine.summary() and f"; machine: {machine.summary()};" in markdown(doc)
    assert "; machine: not recorded;" in markdown({k: v for k, v in doc.items() if k != "machine"})
    # best-of-m is said when used, never otherwise
    assert doc["candidates"] == 1 and "best-of" not in markdown(doc)
    assert "- best-of-2: every generated row sampled 2 texts per code and kept the one preferred by codes" in markdown(
        {**doc, "candidates": 2, "select_by": ["codes"]}
    )


def test_a_pe_sweep_makes_each_dp_row_with_private_evolution(tmp_path, tiny_model_dir, monkeypatch):
    """generator=pe: the eps > 0 rows are PE runs (no training, one PE release each in the ledger, the row's
    records are PE's output); the doc names the generator; an eps = inf row is refused before anything runs."""
    from dpsynth.evaluate import embeddings

    ledger = tmp_path / "ledger.sqlite"
    monkeypatch.setenv("DPSYNTH_LEDGER", str(ledger))
    pe = ["generator=pe", "pe.iterations=2", "pe.variations=1", "frontier.real_all=false"]
    embeddings.forget()
    embedder, encoded = embeddings.load_embedder(), Counter()
    encode = embedder.encode
    monkeypatch.setattr(embedder, "encode", lambda t, **kw: encoded.update(t) or encode(t, **kw))
    with pytest.raises(ConfigError, match="no eps=inf row"):
        run_frontier(_cfg(tiny_model_dir, *pe), tmp_path / "refused", progress=False)
    assert not (tmp_path / "refused").exists()

    out = tmp_path / "pe"
    doc = run_frontier(_cfg(tiny_model_dir, *pe, "frontier.eps=[0, 2]"), out, progress=False)
    assert doc["generator"] == "pe" and {r["eps"] for r in doc["rows"]} == {0.0, 2.0, "real"}
    row = out / "rows" / "eps2"
    privacy = read_json(row / "pe" / "privacy.json")
    assert privacy["generator"] == "pe" and privacy["ledger"]["status"] == "committed"
    assert not (row / "dp").exists()  # nothing was trained
    records = [json.loads(x) for x in (row / "records.jsonl").read_text().splitlines()]
    generated = [json.loads(x) for x in (row / "pe" / "generated_sequences_pe.jsonl").read_text().splitlines()]
    assert len(records) == 12 and [r["text"] for r in records] == [g["text"] for g in generated]
    source = read_json(out / "data" / "prepare.json")["source"]["fingerprint"]
    releases = Ledger(ledger).releases(source)
    assert len(releases) == 1 and releases[0].epsilon <= 2.0 + 1e-9
    made = read_json(row / "row.json")
    assert made["arm"] == "pe" and made["privacy"]["steps"] == 2 and "train" not in made["seconds"]
    assert "Private Evolution" in (out / "frontier.md").read_text()
    private = [json.loads(x)["text"] for x in (out / "data" / "train.jsonl").read_text().splitlines()]
    assert {encoded[t] for t in private} == {1}  # scored and voted with the same vectors: embedded once per sweep
    # a PE row's release is its generation: other sampling settings are refused, not labelled onto it
    with pytest.raises(DPSynthError, match=r"other settings of generate\.temperature"):
        run_frontier(_cfg(tiny_model_dir, *pe, "frontier.eps=[0, 2]", "generate.temperature=0.7"), out, progress=False)


def test_reference_embeddings_are_stored_and_reused(frontier_run, monkeypatch):
    """The real references' vectors live in DIR/data (a resumed sweep does not embed them again); a store that does
    not match its texts is embedded again, never trusted."""
    import numpy as np

    from dpsynth.evaluate import embeddings
    from dpsynth.frontier.metrics import stored_embeddings

    _, out, _, _ = frontier_run
    stores = sorted((out / "data").glob("embeddings-*.npy"))
    assert len(stores) == 3  # the test split, the training split and the test split cut to the length budget
    texts = [json.loads(x)["text"] for x in (out / "data" / "train.jsonl").read_text().splitlines()]
    embeddings.forget()
    real_embed = embeddings.embed
    monkeypatch.setattr(embeddings, "embed", lambda *a, **k: (_ for _ in ()).throw(AssertionError("embedded")))
    loaded = stored_embeddings(texts, out / "data")
    assert loaded.shape == (len(texts), embeddings.EMBEDDING_DIM)
    np.testing.assert_array_equal(real_embed(texts, memo=True), loaded)  # primed the memo with the stored rows
    store = next(p for p in stores if np.load(p).shape[0] == len(texts))
    np.save(store, loaded[:3])  # a damaged store
    monkeypatch.setattr(embeddings, "embed", real_embed)
    embeddings.forget()
    again = stored_embeddings(texts, out / "data")
    np.testing.assert_allclose(again, loaded, atol=1e-5)
    assert np.load(store).shape == loaded.shape  # replaced whole


def test_the_trained_rows_share_one_prefix_cache(tmp_path, tiny_model_dir, monkeypatch):
    """With LoRA on the top blocks, the frozen blocks run once per sweep, not once per trained row."""
    from dpsynth.train.prefix import PrefixCache

    builds = []
    real_build = PrefixCache.build

    def spy(*args, **kwargs):
        builds.append(real_build(*args, **kwargs))
        return builds[-1]

    monkeypatch.setattr(PrefixCache, "build", spy)
    extra = ["train.lora.top_k_layers=1", "frontier.eps=[2, inf]", "frontier.real_all=false"]
    run_frontier(_cfg(tiny_model_dir, *extra), tmp_path / "f", progress=False)
    full = [b for b in builds if len(b.lengths) > 1]  # besides each row's one-example probe
    assert len(full) == 1  # the eps 2 row built it, the inf row loaded it
    assert len(list((tmp_path / "f" / "prefix_cache").glob("prefix-*.pt"))) == 1
    for key in ("eps2", "epsinf"):
        assert (tmp_path / "f" / "rows" / key / "row.json").is_file()


def test_a_resumed_row_counts_the_training_time_before_the_crash(tmp_path, tiny_model_dir, monkeypatch):
    """A DP row whose training crashed after step 1 and resumed reports the steps the first attempt logged as well,
    not only the time after the resume (here step 1's logged time is set to 1,000 s, so only the sum passes)."""
    from dpsynth.train import loop as loop_module

    class Crash(Exception):
        pass

    original = loop_module.ArmTrainer._after_step

    def after_step(self, *args, **kwargs):
        original(self, *args, **kwargs)
        if self.state.step == 1:
            raise Crash

    cfg = _cfg(tiny_model_dir, "frontier.eps=[2]", "frontier.real_all=false")
    with monkeypatch.context() as m:
        m.setattr(loop_module.ArmTrainer, "_after_step", after_step)
        with pytest.raises(Crash):
            run_frontier(cfg, tmp_path / "f", progress=False)
    meta_path = tmp_path / "f" / "rows" / "eps2" / "dp" / "checkpoints" / "meta.json"
    meta = read_json(meta_path)
    assert meta["step"] == 1 and [r["step"] for r in meta["log"]] == [1]
    meta["log"][0]["seconds"] = 1000.0
    write_json(meta_path, meta)
    run_frontier(cfg, tmp_path / "f", progress=False)
    row = read_json(tmp_path / "f" / "rows" / "eps2" / "row.json")
    assert row["reused_training"] is False
    assert 1000.0 < row["seconds"]["train"] < 1000.0 + 600


def test_only_the_steps_before_the_resume_are_added(tmp_path):
    """The earlier attempt's time is the logged steps up to the checkpoint's step, not the whole log."""
    from dpsynth.frontier.rows import _logged_seconds
    from dpsynth.rundir import RunDir, write_jsonl

    run = RunDir(tmp_path)
    assert _logged_seconds(run, "dp", through_step=2) == 0.0  # no log yet
    run.arm("dp").mkdir(parents=True)
    write_jsonl(run.train_log("dp"), [{"step": s, "seconds": 10.0 * s} for s in (1, 2, 3, 4)])
    assert _logged_seconds(run, "dp", through_step=2) == 30.0
    assert _logged_seconds(run, "dp", through_step=0) == 0.0


def test_each_row_resolves_the_length_bound_by_what_it_may_read(tmp_path, tiny_model_dir, monkeypatch):
    """data.max_tokens=auto in a sweep: the DP row releases the bound at its own epsilon and its ledger entry holds
    the length histogram; inf reads it exactly (never released); eps 0 reads no private data for it."""
    ledger = tmp_path / "ledger.sqlite"
    monkeypatch.setenv("DPSYNTH_LEDGER", str(ledger))
    extra = ["data.max_tokens=auto", "data.max_tokens_grid=[8,16,48]", "data.max_tokens_public=16"]
    out = tmp_path / "f"
    run_frontier(_cfg(tiny_model_dir, *extra, "frontier.real_all=false"), out, progress=False)
    assert read_json(out / "data" / "prepare.json")["max_tokens"] == "auto"  # the shared data: no row's bound
    modes = {}
    for key in ("eps0", "eps2", "epsinf", "real"):
        info = read_json(out / "rows" / key / "data" / "prepare.json")
        modes[key] = info["length_release"]["mode"]
        assert info["max_tokens"] == info["length_release"]["max_tokens"]
    assert modes == {"eps0": "public", "eps2": "dp", "epsinf": "exact", "real": "public"}
    assert read_json(out / "rows" / "eps0" / "data" / "prepare.json")["max_tokens"] == 16
    dp = read_json(out / "rows" / "eps2" / "data" / "prepare.json")["length_release"]
    assert dp["sigma"] > 0
    source = read_json(out / "data" / "prepare.json")["source"]["fingerprint"]
    length_entry, arm_entry = Ledger(ledger).releases(source)  # the draw, charged when made; then the arm
    assert [m.name for m in length_entry.mechanisms] == ["length_histogram"] and arm_entry.arm == "dp"
    privacy = read_json(out / "rows" / "eps2" / "dp" / "privacy.json")
    assert privacy["epsilon"] <= 2.0 + 1e-9
    assert arm_entry.composed_epsilon == pytest.approx(privacy["epsilon"], rel=1e-6)  # the row's whole, once
    doc = read_json(out / "frontier.json")
    assert doc["row_length_bounds"]["eps0"] == {"mode": "public", "max_tokens": 16}
    assert doc["row_length_bounds"]["eps2"] == {"mode": "dp", "max_tokens": dp["max_tokens"]}
    assert "length bound (data.max_tokens=auto" in (out / "frontier.md").read_text()
    # a rerun keeps every row and its bound: the DP row's noise is not drawn again
    run_frontier(_cfg(tiny_model_dir, *extra, "frontier.real_all=false"), out, progress=False)
    assert read_json(out / "rows" / "eps2" / "data" / "prepare.json")["length_release"] == dp
    assert len(Ledger(ledger).releases(source)) == 2


def test_the_length_release_settings_change_no_fingerprint_unless_auto(tiny_model_dir):
    """Sweeps made before data.max_tokens=auto keep their data and rows: its settings enter the fingerprints only
    when auto reads them."""
    from dpsynth.frontier.fingerprint import fingerprint
    from dpsynth.frontier.run import _data_fingerprint
    from dpsynth.frontier.spec import RowSpec

    row = RowSpec(key="eps2", eps=2.0)
    extra = ["data.max_tokens_grid=[16,32]", "data.max_tokens_public=32", "privacy.length_epsilon_fraction=0.1"]
    base, moved = _cfg(tiny_model_dir), _cfg(tiny_model_dir, *extra)
    assert _data_fingerprint(base) == _data_fingerprint(moved) and fingerprint(base, row) == fingerprint(moved, row)
    auto = _cfg(tiny_model_dir, "data.max_tokens=auto")
    auto_moved = _cfg(tiny_model_dir, "data.max_tokens=auto", *extra)
    assert _data_fingerprint(auto) != _data_fingerprint(auto_moved)
    assert fingerprint(auto, row) != fingerprint(auto_moved, row)


def test_rows_of_another_prompt_format_are_not_kept(frontier_run, tiny_model_dir, tmp_path, monkeypatch):
    """A chat template or prompt wording that changed (no setting shows it, so no fingerprint does): a trained row is
    refused before anything is touched; an eps-0 row, which holds no release, is prompted again in today's format."""
    import shutil

    from dpsynth.models import loader
    from dpsynth.train import prompt_format, stage

    cfg, out, _, ledger_path = frontier_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    monkeypatch.setenv("DPSYNTH_LEDGER", str(ledger_path))
    today = prompt_format.current(cfg.model, RunDir(copy))
    for key, arm in (("eps2", "dp"), ("epsinf", "no_dp")):
        assert read_json(copy / "rows" / key / arm / "privacy.json")[prompt_format.KEY] == today, key
    assert read_json(copy / "rows" / "eps0" / "row.json")[prompt_format.KEY] == today

    changed = loader.load_tokenizer(cfg.model)
    changed.chat_template = changed.chat_template.replace("<|im_end|>", "<|endoftext|>")
    with monkeypatch.context() as mp:
        mp.setattr(loader, "load_tokenizer", lambda _cfg: changed)
        before = {p: p.stat().st_mtime_ns for p in copy.rglob("*") if p.is_file()}
        with pytest.raises(DPSynthError, match=r"frontier row eps2: .*another prompt format"):
            run_frontier(cfg, copy, progress=False)
        # a row not kept (only generation changed: it would generate again from its arm) is refused the same way
        with pytest.raises(DPSynthError, match=r"frontier row eps2: .*another prompt format"):
            run_frontier(_cfg(tiny_model_dir, "generate.temperature=0.8"), copy, progress=False)
        assert {p: p.stat().st_mtime_ns for p in copy.rglob("*") if p.is_file()} == before  # nothing touched

    monkeypatch.setattr(stage, "train_arm", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained again")))
    eps0 = copy / "rows" / "eps0" / "row.json"
    # made before the key existed (or by a PE sweep): kept as it is, nothing to compare
    write_json(eps0, {k: v for k, v in read_json(eps0).items() if k != prompt_format.KEY})
    unkeyed = eps0.stat().st_mtime_ns
    run_frontier(cfg, copy, progress=False)
    assert eps0.stat().st_mtime_ns == unkeyed and prompt_format.KEY not in read_json(eps0)

    write_json(eps0, {**read_json(eps0), prompt_format.KEY: "sha256:made-in-another-format"})
    scores = copy / "rows" / "eps0" / "scores.json"
    write_json(scores, {**read_json(scores), "entries": []})  # what the old records scored: must not survive
    kept = {k: (copy / "rows" / k / "row.json").stat().st_mtime_ns for k in ("eps2", "epsinf", "real")}
    again = run_frontier(cfg, copy, progress=False)
    assert read_json(eps0)[prompt_format.KEY] == today  # remade
    assert read_json(scores)["entries"] and any(r["eps"] == 0.0 for r in again["rows"])  # and scored again
    assert {k: (copy / "rows" / k / "row.json").stat().st_mtime_ns for k in kept} == kept


def test_the_codes_only_probe_prompts_a_public_adapter_with_the_row_s_codes(frontier_run, tmp_path):
    """``bench/codes_only_probe.py``: the row's released codes, drawn again in the row's order, prompt the given adapter
    in place of the DP-trained one; no private record is copied; the records are scored as the frontier scores."""
    import subprocess
    import sys
    from pathlib import Path

    from dpsynth.models.convert import adapter_digest

    cfg, out, doc, _ = frontier_run
    script = Path(__file__).resolve().parents[2] / "bench" / "codes_only_probe.py"
    adapter = out / "rows" / "epsinf" / "no_dp" / "adapter"  # stands in for a public warm start
    probe = tmp_path / "probe"
    argv = [sys.executable, str(script), "--sweep", str(out), "--row", "eps2", "--adapter", str(adapter)]
    done = subprocess.run([*argv, "--out", str(probe)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-3000:]
    row = read_json(out / "rows" / "eps2" / "row.json")
    (generated,) = (probe / "dp").glob("generated*.jsonl")
    assert [r["codes"] for r in read_jsonl(generated)] == [r["codes"] for r in read_jsonl(out / row["records"])]
    assert adapter_digest(probe / "dp" / "adapter") == adapter_digest(adapter)
    assert adapter_digest(probe / "dp" / "adapter") != adapter_digest(out / "rows" / "eps2" / "dp" / "adapter")
    assert not list((probe / "data").glob("*.jsonl"))  # the row's metadata only, no split
    scores = json.loads((probe / "scores.json").read_text())
    assert {e["label"] for e in scores} == {r["label"] for r in doc["rows"] if r["eps"] == 2.0}
    assert all(e["eps"] == 2.0 and e["n_train"] <= cfg.frontier.n_synthetic for e in scores)
    assert any(e["classifier"] == "embedding" and e["mauve"] is not None for e in scores)

    refused = subprocess.run([*argv, "--out", str(out / "rows" / "x")], capture_output=True, text=True, check=False)
    assert refused.returncode != 0 and "would replace the sweep" in refused.stderr


def test_mauve_in_the_second_feature_space_scores_each_draw_on_its_own(frontier_run, tmp_path, monkeypatch):
    """``bench/mauve_features.py`` on a row holding two draws (its records twice over): each slice of n_synthetic is
    scored alone, as the frontier scores draws, so both give the one-draw figure and the row's is their mean."""
    import runpy
    import shutil
    import sys
    from pathlib import Path

    cfg, out, _, _ = frontier_run
    copy = tmp_path / "copy"
    shutil.copytree(out, copy)
    records = read_jsonl(copy / "rows" / "eps2" / "records.jsonl")
    assert len(records) == cfg.frontier.n_synthetic
    (copy / "rows" / "eps2" / "records.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in records + records), encoding="utf-8"
    )
    config = (copy / "config.yaml").read_text()
    assert config.count("draws: 1\n") == 1
    (copy / "config.yaml").write_text(config.replace("draws: 1\n", "draws: 2\n"))
    script = Path(__file__).resolve().parents[2] / "bench" / "mauve_features.py"
    doc = {}
    for sweep in (out, copy):
        monkeypatch.setattr(sys, "argv", [str(script), "--sweep", str(sweep), "--json", str(tmp_path / "m.json")])
        runpy.run_path(str(script), run_name="__main__")
        doc[sweep] = {r["row"]: r for r in json.loads((tmp_path / "m.json").read_text())["rows"]}
    one, two = doc[out]["eps2"], doc[copy]["eps2"]
    assert "mauve_lm_draws" not in one and two["records"] == 2 * one["records"]
    assert two["mauve_lm_draws"] == [pytest.approx(one["mauve_lm"])] * 2
    assert two["mauve_lm"] == pytest.approx(one["mauve_lm"])


def test_heldout_nll_scores_each_adapter_on_the_test_split(frontier_run, tmp_path, monkeypatch):
    """``bench/heldout_nll.py``: the same adapter named twice scores identically, the base model is scored too, and
    each figure is the per-unit loss that the whole-model scoring path gives for that adapter."""
    import runpy
    import sys
    from pathlib import Path

    import numpy as np
    from peft import PeftModel

    from dpsynth.data.prepare import load_prepare_info
    from dpsynth.data.records import group_by_unit, read_records
    from dpsynth.evaluate.model_privacy import UnitScorer
    from dpsynth.models.loader import load_model, load_tokenizer

    cfg, out, _, _ = frontier_run
    row = out / "rows" / "eps2"
    dp, other = row / "dp" / "adapter", out / "rows" / "epsinf" / "no_dp" / "adapter"
    script = Path(__file__).resolve().parents[2] / "bench" / "heldout_nll.py"
    argv = [str(script), "--run", str(row), "--units", "5", "--json", str(tmp_path / "h.json")]
    monkeypatch.setattr(sys, "argv", [*argv, f"dp={dp}", f"again={dp}", f"other={other}"])
    runpy.run_path(str(script), run_name="__main__")
    rows = {r["model"]: r for r in json.loads((tmp_path / "h.json").read_text())["rows"]}
    assert set(rows) == {"base", "dp", "again", "other"}
    assert rows["again"]["diff"] == 0.0 and rows["again"]["nll"] == rows["dp"]["nll"]
    assert rows["other"]["nll"] != rows["dp"]["nll"] and rows["base"]["nll"] != rows["dp"]["nll"]
    run = RunDir(row)
    units = list(group_by_unit(read_records(run.test)).values())[:5]
    tok = load_tokenizer(cfg.model)
    model = PeftModel.from_pretrained(load_model(cfg.model), dp).eval()
    whole = UnitScorer(tok, units, load_prepare_info(run), 8192).losses(model)
    assert rows["dp"]["nll"] == pytest.approx(float(np.mean(whole)), abs=1e-4)


def test_dp_snr_measures_at_the_warm_start_when_one_is_set(frontier_run, tmp_path, monkeypatch):
    """``bench/dp_snr.py`` with ``train.init_adapter``: LoRA's B starts at zero, so a fresh adapter's A factors get no
    gradient; from a trained adapter they do, which shows the warm start is where the gradients are taken."""
    import runpy
    import sys
    from pathlib import Path

    _, out, _, _ = frontier_run
    script = Path(__file__).resolve().parents[2] / "bench" / "dp_snr.py"
    warm = out / "rows" / "eps2" / "dp" / "adapter"
    groups = {}
    for name, extra in (("fresh", []), ("warm", [f"train.init_adapter={warm}"])):
        argv = [str(script), "--config", str(out / "config.yaml"), "--examples", "4", "--n", "100", "--batch", "10"]
        monkeypatch.setattr(sys, "argv", [*argv, "--clip", "0.1", "--json", str(tmp_path / f"{name}.json"), *extra])
        runpy.run_path(str(script), run_name="__main__")
        doc = json.loads((tmp_path / f"{name}.json").read_text())
        assert sum(g["coordinates"] for g in doc["groups"].values()) == doc["d"]
        groups[name] = doc["groups"]
    a_parts = [k for k in groups["fresh"] if k.endswith("lora_A")]
    assert a_parts and all(groups["fresh"][k]["coherence"] is None for k in a_parts)  # no gradient at all
    assert all(groups["warm"][k]["coherence"] is not None for k in a_parts)
