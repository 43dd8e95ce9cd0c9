"""Best-of-m sampling (generate.candidates): the kept text of each slot is its candidate that reads most like the
slot's code (zero-shot, public embedding model) or is well-formed, the codes are never changed, and one candidate
per code is the path as it was."""

from __future__ import annotations

import numpy as np
import pytest

from dpsynth.config import Config, GenerateConfig, ModelConfig, load_config
from dpsynth.errors import ConfigError
from dpsynth.generate import engine as engine_module
from dpsynth.generate.select import choose, code_description, code_margins

DOMAINS = {"category": ["Restaurants", "Beauty_and_Spas", "Automotive"]}
FOOD = "The pasta was fresh, the wine list long and our waiter brought dessert quickly. Great dinner."
SALON = "My stylist gave me a lovely haircut and the manicure was perfect. I will book my nails here again."
GARAGE = "They replaced my brakes and changed the oil in an hour; the mechanic explained every repair on my car."


def _axis_embed(texts):
    """A fake embedding: the axis of the first domain value named in the text (unit vectors)."""
    out = np.zeros((len(texts), 3))
    for i, t in enumerate(texts):
        hit = [j for j, key in enumerate(("Restaurants", "Beauty", "Automotive")) if key in t]
        out[i, hit[0] if hit else 0] = 1.0
    return out


def test_margins_are_own_value_minus_best_other():
    vectors = _axis_embed(["Restaurants", "Beauty", "Automotive"])
    codes = [{"category": "Restaurants"}, {"category": "Restaurants"}, {"category": "Automotive"}]
    margins = code_margins(vectors, codes, DOMAINS, _axis_embed)
    np.testing.assert_allclose(margins, [1.0, -1.0, 1.0])
    # a code outside its domain, or one with a single value, adds nothing
    assert code_margins(vectors[:1], [{"category": "Cinema"}], DOMAINS, _axis_embed).tolist() == [0.0]
    assert code_margins(vectors[:1], [{"category": "Restaurants"}], {"category": ["Restaurants"]}, _axis_embed)[0] == 0


def test_each_slot_keeps_its_candidate_that_reads_as_its_code():
    """The bundled sentence model reads plain reviews by category (m = 3 candidates, one of each kind)."""
    codes = [{"category": "Restaurants"}, {"category": "Beauty_and_Spas"}, {"category": "Automotive"}]
    n = len(codes)
    # candidate j of slot i at j * n + i: candidate 0 is GARAGE for every slot, 1 FOOD, 2 SALON
    texts = [GARAGE] * n + [FOOD] * n + [SALON] * n
    keep = choose(texts, codes, 3, DOMAINS, ["codes"])
    assert [texts[k] for k in keep] == [FOOD, SALON, GARAGE]
    assert [k % n for k in keep] == [0, 1, 2]  # each slot keeps one of its own candidates


def test_well_formed_comes_first_and_codes_break_ties():
    codes = [{"category": "Restaurants"}]
    cut = "The pasta was fresh and the wine list was long and the waiter"
    keep = choose([SALON, cut, FOOD], codes, 3, DOMAINS, ["well_formed", "codes"])
    assert keep == [2]  # FOOD: well-formed and on its code
    assert choose([cut, SALON], codes, 2, DOMAINS, ["well_formed"]) == [1]
    assert choose([cut, SALON], codes, 2, DOMAINS, ["codes"]) == [0]  # the cut one is about food
    with pytest.raises(ValueError, match="2 candidates for each of 1 codes"):
        choose([cut], codes, 2, DOMAINS, ["codes"])


def test_code_descriptions_use_the_prompts_public_wording():
    assert code_description("rating", 5) == "A very positive review."
    assert code_description("category", "Toys_and_Games") == "A review of Toys and Games."


def test_generate_from_codes_samples_m_per_code_and_keeps_the_codes_order(monkeypatch):
    """The engine is asked for every code m times in one pass; the result has one text per code, in order."""
    seen: list[int] = []

    def fake_sample_texts(model_cfg, adapter_dir, prompts, settings, **kw):
        seen.append(len(prompts))
        n = len(prompts) // 2
        # first pass: a salon text for every slot; second: a food text for the first slot only
        return [SALON] * n + [FOOD] + [SALON] * (n - 1)

    monkeypatch.setattr(engine_module, "sample_texts", fake_sample_texts)
    monkeypatch.setattr(engine_module, "load_tokenizer", lambda cfg: _Tok())
    monkeypatch.setattr("dpsynth.data.format.encode_prompt", lambda tok, c, system: [1, 2, 3])
    codes = [{"category": "Restaurants"}, {"category": "Beauty_and_Spas"}]
    g = GenerateConfig(candidates=2)
    texts = engine_module.generate_from_codes(ModelConfig(), None, codes, "sys", g, domains=DOMAINS)
    assert seen == [4] and texts == [FOOD, SALON]
    with pytest.raises(ValueError, match="public domains"):
        engine_module.generate_from_codes(ModelConfig(), None, codes, "sys", g)
    seen.clear()
    monkeypatch.setattr(engine_module, "sample_texts", lambda *a, **k: seen.append(len(a[2])) or [GARAGE, FOOD])
    assert engine_module.generate_from_codes(ModelConfig(), None, codes, "sys", GenerateConfig()) == [GARAGE, FOOD]
    assert seen == [2]  # one candidate: one prompt per code, no selection


class _Tok:
    pass


def test_best_of_m_is_refused_for_private_evolution_and_needs_a_criterion(tmp_path):
    with pytest.raises(ValueError, match="Private Evolution"):
        Config.model_validate({"generator": "pe", "generate": {"candidates": 2}})
    with pytest.raises(ValueError):
        GenerateConfig(select_by=[])
    with pytest.raises(ValueError):
        GenerateConfig(candidates=0)
    path = tmp_path / "c.yaml"
    path.write_text("generate:\n  select_by: [vibes]\n")
    with pytest.raises(ConfigError, match="select_by"):
        load_config(path)


def test_the_generate_stage_reads_codes_against_the_prepared_domains(tmp_path, monkeypatch):
    """With candidates > 1 the stage hands the code domains that prepare declared to the sampler (one candidate:
    none, and prepare's code specs are not read)."""
    from types import SimpleNamespace

    from dpsynth.generate import stage
    from dpsynth.privacy.codes import release_marginals
    from dpsynth.rundir import RunDir, write_json

    run = RunDir(tmp_path)
    release = release_marginals([[{"category": "Restaurants"}]] * 5, DOMAINS, None, None)
    run.control_codes("dp").parent.mkdir(parents=True, exist_ok=True)
    write_json(run.control_codes("dp"), {"names": ["category"], "dp": True, "release": release.to_json()})
    monkeypatch.setattr(stage, "load_prepare_info", lambda _run: {"system_prompt": "s", "include_title": False})
    specs = [SimpleNamespace(name="category", values=tuple(DOMAINS["category"]))]
    monkeypatch.setattr(stage, "load_code_specs", lambda _run: specs)
    seen: list[object] = []

    def fake(_m, _a, codes, *_args, domains=None, **_kw):
        seen.append(domains)
        return ["A review."] * len(codes)

    monkeypatch.setattr(stage, "generate_from_codes", fake)
    stage.generate_arm(load_config(None, ["generate.num_records=3", "generate.candidates=2"]), run, "dp")
    stage.generate_arm(load_config(None, ["generate.num_records=3"]), run, "dp")
    assert seen == [DOMAINS, None]
