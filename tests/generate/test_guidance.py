"""Classifier-free guidance over the codes (dpsynth.generate.guidance): the HF engine's guided tokens are the argmax
of the guided distribution computed by hand, padding changes nothing, and every other engine refuses it."""

from __future__ import annotations

import pydantic
import pytest
import torch

from dpsynth.config import GenerateConfig, ModelConfig
from dpsynth.data.format import encode_prompt
from dpsynth.generate import engine as engine_module
from dpsynth.generate.engine import generate_from_codes, load_engine, resolve_engine
from dpsynth.generate.guidance import negative_codes
from dpsynth.generate.sampling import HFEngine, SamplingSettings, stop_token_ids

SYSTEM = "You write realistic customer product reviews."
CODES = [{"rating": 1, "category": "Books"}, {"rating": 5}, {"rating": 2, "category": "Toys_and_Games"}]


def _greedy(scale: float, batch_size: int = 3) -> SamplingSettings:
    return SamplingSettings(max_new_tokens=6, top_p=1.0, top_k=1, batch_size=batch_size, guidance_scale=scale)


@pytest.fixture(scope="module")
def cfg(tiny_model_dir, tmp_path_factory) -> ModelConfig:
    return ModelConfig(name=str(tiny_model_dir), cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture()
def engine(cfg, tokenizer) -> HFEngine:
    eng = load_engine(cfg, None, tokenizer, engine="hf", guided=True)
    assert isinstance(eng, HFEngine)
    return eng


def _prompts(tokenizer, guided=None):
    prompts = [encode_prompt(tokenizer, c, SYSTEM) for c in CODES]
    negatives = [encode_prompt(tokenizer, negative_codes(c, guided), SYSTEM) for c in CODES]
    return prompts, negatives


def test_the_first_guided_token_is_the_argmax_of_the_guided_distribution(engine, tokenizer):
    prompts, negatives = _prompts(tokenizer)
    assert len({len(p) for p in prompts}) > 1  # a left-padded batch
    model = engine.model
    with torch.no_grad():
        cond = [torch.log_softmax(model(torch.tensor([p])).logits[0, -1], -1) for p in prompts]
        neg = [torch.log_softmax(model(torch.tensor([n])).logits[0, -1], -1) for n in negatives]

    def by_hand(scale: float) -> list[int]:
        return [int((n + scale * (c - n)).argmax()) for c, n in zip(cond, neg, strict=True)]

    # the tiny random model prefers one token strongly: the smallest scale that moves some row's first token
    scale = next(s for s in (2.0, 5.0, 20.0, 100.0, 500.0) if by_hand(s) != by_hand(1.0))
    out = engine.generate(prompts, stop_token_ids(tokenizer), _greedy(scale), negatives=negatives)
    plain = engine.generate(prompts, stop_token_ids(tokenizer), _greedy(1.0))
    assert [o[0] for o in out] == by_hand(scale) != [o[0] for o in plain]
    assert [o[0] for o in plain] == by_hand(1.0)


def test_a_guided_row_is_the_same_alone_and_in_a_padded_batch(engine, tokenizer):
    prompts, negatives = _prompts(tokenizer, guided=["rating"])  # negatives keep the category: lengths differ
    assert len({len(n) for n in negatives}) > 1
    stops = stop_token_ids(tokenizer)
    plain = engine.generate(prompts, stops, _greedy(1.0))
    # a scale at which the tiny model's guided tokens differ from its unguided ones (at 2 they do not), and from
    # those guided by misaligned negatives: the comparison below then shows each row got its own negative prompt
    scale = next(s for s in (20.0, 100.0) if engine.generate(prompts, stops, _greedy(s), negatives=negatives) != plain)
    together = engine.generate(prompts, stops, _greedy(scale), negatives=negatives)
    misaligned = engine.generate(prompts, stops, _greedy(scale), negatives=negatives[::-1])
    assert together != plain and together != misaligned
    alone = [
        engine.generate([p], stops, _greedy(scale, 1), negatives=[n])[0]
        for p, n in zip(prompts, negatives, strict=True)
    ]
    assert together == alone


def test_guidance_needs_its_negative_prompts(engine, tokenizer):
    prompts, negatives = _prompts(tokenizer)
    with pytest.raises(ValueError, match="negative prompt"):
        engine.generate(prompts, stop_token_ids(tokenizer), _greedy(2.0))
    with pytest.raises(ValueError, match="negative prompt"):
        engine.generate(prompts, stop_token_ids(tokenizer), _greedy(2.0), negatives=negatives[:1])


def test_negative_prompts_drop_the_guided_codes(cfg, monkeypatch):
    seen = {}

    def fake_sample_texts(model_cfg, adapter_dir, prompts, settings, **kw):
        seen.update(prompts=prompts, settings=settings, negatives=kw["negatives"], tokenizer=kw["tokenizer"])
        return ["x"] * len(prompts)

    monkeypatch.setattr(engine_module, "sample_texts", fake_sample_texts)
    g = GenerateConfig(guidance_scale=2.0, guidance_codes=["rating"])
    generate_from_codes(cfg, None, CODES, SYSTEM, g)
    tok = seen["tokenizer"]
    assert seen["settings"].guidance_scale == 2.0
    assert seen["negatives"] == [
        encode_prompt(tok, {k: v for k, v in c.items() if k != "rating"}, SYSTEM) for c in CODES
    ]
    generate_from_codes(cfg, None, CODES, SYSTEM, GenerateConfig(guidance_scale=2.0))
    assert seen["negatives"] == [encode_prompt(tok, {}, SYSTEM)] * len(CODES)
    generate_from_codes(cfg, None, CODES, SYSTEM, GenerateConfig())
    assert seen["negatives"] is None and seen["settings"].guidance_scale == 1.0


def test_negatives_follow_their_prompts_with_best_of_m_and_name_real_codes(cfg, monkeypatch):
    seen = {}

    def fake_sample_texts(model_cfg, adapter_dir, prompts, settings, **kw):
        seen.update(prompts=prompts, negatives=kw["negatives"], tokenizer=kw["tokenizer"])
        return ["x"] * len(prompts)

    monkeypatch.setattr(engine_module, "sample_texts", fake_sample_texts)
    monkeypatch.setattr("dpsynth.generate.select.choose", lambda texts, codes, m, *a: list(range(len(codes))))
    g = GenerateConfig(guidance_scale=2.0, guidance_codes=["rating"], candidates=2, select_by=["well_formed"])
    generate_from_codes(cfg, None, CODES, SYSTEM, g)
    tok = seen["tokenizer"]
    assert len(seen["negatives"]) == len(seen["prompts"]) == 2 * len(CODES)
    for i, (p, n) in enumerate(zip(seen["prompts"], seen["negatives"], strict=True)):
        c = CODES[i % len(CODES)]
        assert p == encode_prompt(tok, c, SYSTEM)
        assert n == encode_prompt(tok, {k: v for k, v in c.items() if k != "rating"}, SYSTEM)
    from dpsynth.errors import ConfigError

    with pytest.raises(ConfigError, match="ratings, not among the control codes"):
        generate_from_codes(cfg, None, CODES, SYSTEM, GenerateConfig(guidance_scale=2.0, guidance_codes=["ratings"]))
    with pytest.raises(pydantic.ValidationError):
        GenerateConfig(guidance_scale=2.0, guidance_codes=[])
    with pytest.raises(ConfigError, match="needs control codes"):
        generate_from_codes(cfg, None, [{}, {}], SYSTEM, GenerateConfig(guidance_scale=2.0))


def test_guidance_is_refused_for_private_evolution():
    from dpsynth.config import load_config

    with pytest.raises(Exception, match="Private Evolution"):
        load_config(None, ["generator=pe", "generate.guidance_scale=2", "generate.engine=hf"])


def test_only_the_hf_engine_guides(cfg, tokenizer):
    assert resolve_engine("auto", cfg, guided=True) == "hf"
    for name in ("ctranslate2", "vllm"):
        with pytest.raises(pydantic.ValidationError, match="needs the hf engine"):
            GenerateConfig(guidance_scale=1.5, engine=name)
    GenerateConfig(guidance_scale=1.0, engine="ctranslate2")  # off: any engine
    pytest.importorskip("ctranslate2", reason="ctranslate2 is a dependency of dpsynth: pip install -e .")
    assert resolve_engine("auto", cfg) == "ctranslate2"  # unguided, on this CPU
    from dpsynth.errors import ConfigError

    with pytest.raises(ConfigError, match="needs the hf engine"):
        load_engine(cfg, None, tokenizer, engine="ctranslate2", guided=True)
