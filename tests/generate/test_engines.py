"""Every generation engine gets the same prompts and stop ids and honours the same settings (tiny random Llama).

HF ``generate`` and CTranslate2 (float32, on the merged model) are compared token for token under greedy decoding
(``top_k=1`` means the single most likely token in both), which checks the merge, the conversion, the prompt ids,
the stop ids and ``max_new_tokens`` at once; sampling is checked for its seed and its length limit.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from dpsynth.config import GenerateConfig, ModelConfig
from dpsynth.data.format import encode_prompt
from dpsynth.generate import engine as engine_module
from dpsynth.generate.ct2_engine import CT2Engine
from dpsynth.generate.engine import generate_from_codes, load_engine, resolve_engine
from dpsynth.generate.sampling import HFEngine, SamplingSettings, batch_spans, stop_token_ids
from dpsynth.models.convert import converted_dir, ctranslate2_model

pytest.importorskip("ctranslate2", reason="ctranslate2 is a dependency of dpsynth: pip install -e .")

SYSTEM = "You write realistic customer product reviews."
GREEDY = SamplingSettings(max_new_tokens=12, temperature=1.0, top_p=1.0, top_k=1, seed=0, batch_size=3)


@pytest.fixture(scope="module")
def adapter_dir(tmp_path_factory, tiny_model_dir) -> Path:
    """A LoRA adapter (q_proj, v_proj) on the tiny Llama with non-zero B, so that merging it changes the outputs."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(1)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 1.0)
    path = tmp_path_factory.mktemp("run") / "dp" / "adapter"
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def cfg(tiny_model_dir, tmp_path_factory) -> ModelConfig:
    return ModelConfig(name=str(tiny_model_dir), cache_dir=tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="module")
def prompts(tokenizer) -> list[list[int]]:
    codes = [{"rating": 1}, {"rating": 5, "category": "Books"}, {"rating": 3}, {"rating": 2}]
    return [encode_prompt(tokenizer, c, SYSTEM) for c in codes]


def _engines(cfg, adapter, tokenizer):
    hf = load_engine(cfg, adapter, tokenizer, engine="hf")
    ct2 = load_engine(cfg, adapter, tokenizer, engine="ctranslate2", quantization="float32")
    assert isinstance(hf, HFEngine) and isinstance(ct2, CT2Engine)
    return hf, ct2


def test_greedy_tokens_equal_across_engines(cfg, adapter_dir, tokenizer, prompts):
    hf, ct2 = _engines(cfg, adapter_dir, tokenizer)
    stops = stop_token_ids(tokenizer)
    a = hf.generate(prompts, stops, GREEDY)
    b = ct2.generate(prompts, stops, GREEDY)
    assert a == b
    assert all(len(x) == GREEDY.max_new_tokens for x in a)  # a random model never says <|im_end|>
    # The adapter is merged, not dropped: the base model alone continues differently.
    base = load_engine(cfg, None, tokenizer, engine="ctranslate2", quantization="float32").generate(
        prompts, stops, GREEDY
    )
    assert base != b
    assert base == load_engine(cfg, None, tokenizer, engine="hf").generate(prompts, stops, GREEDY)


def test_both_engines_stop_at_the_stop_token(cfg, adapter_dir, tokenizer, prompts):
    """A token that greedy decoding emits at step 4 of the first prompt, made a stop token: both cut there."""
    hf, ct2 = _engines(cfg, adapter_dir, tokenizer)
    free = hf.generate(prompts, stop_token_ids(tokenizer), GREEDY)
    stop = free[0][4]
    stops = [*stop_token_ids(tokenizer), stop]
    a = hf.generate(prompts, stops, GREEDY)
    assert a == ct2.generate(prompts, stops, GREEDY)
    assert a[0] == free[0][: free[0].index(stop)]
    for cut, full in zip(a, free, strict=True):
        assert stop not in cut
        assert cut == (full[: full.index(stop)] if stop in full else full)


def test_ctranslate2_sees_the_same_prompt_ids(cfg, adapter_dir, tokenizer, prompts):
    """The prompts go in as vocabulary strings: the converted vocabulary must map them back to the same ids."""
    folder = ctranslate2_model(cfg, adapter_dir, "float32")
    vocab = json.loads((folder / "vocabulary.json").read_text())
    for p in prompts:
        assert [vocab.index(t) for t in tokenizer.convert_ids_to_tokens(p)] == p
    assert [vocab.index(tokenizer.convert_ids_to_tokens(i)) for i in stop_token_ids(tokenizer)] == stop_token_ids(
        tokenizer
    )


@pytest.mark.parametrize("name", ["hf", "ctranslate2"])
def test_sampling_respects_max_new_tokens_and_reproduces(name, cfg, adapter_dir, tokenizer, prompts):
    eng = load_engine(cfg, adapter_dir, tokenizer, engine=name, quantization="int8")
    stops = stop_token_ids(tokenizer)
    s = SamplingSettings(max_new_tokens=7, temperature=1.0, top_p=0.9, top_k=0, seed=3, batch_size=2)
    first = eng.generate(prompts, stops, s)
    assert first == eng.generate(prompts, stops, s)
    assert all(len(x) <= s.max_new_tokens for x in first) and max(len(x) for x in first) == s.max_new_tokens
    other = eng.generate(prompts, stops, SamplingSettings(**{**s.__dict__, "seed": 4}))
    assert other != first


def test_ctranslate2_replicas_keep_the_order_reproduce_and_draw_apart(cfg, adapter_dir, tokenizer, prompts):
    """Two model copies, each with its share of the batches: greedy outputs equal one copy's (the batches come back
    in order); sampled outputs reproduce with the seed; and the same prompt in two batches run by two replicas is
    not one record twice (CTranslate2's own ``inter_threads`` seeds both workers alike, which would repeat it)."""
    stops = stop_token_ids(tokenizer)
    folder = ctranslate2_model(cfg, adapter_dir, "float32")
    one = CT2Engine(folder, tokenizer, threads=2, replicas=1)
    two = CT2Engine(folder, tokenizer, threads=2, replicas=2)
    many = prompts * 3  # 12 prompts in batches of 3: batches 0, 2 on one replica, 1, 3 on the other
    assert two.generate(many, stops, GREEDY) == one.generate(many, stops, GREEDY)
    s = SamplingSettings(max_new_tokens=10, temperature=1.0, top_p=1.0, top_k=0, seed=5, batch_size=1)
    same = [prompts[0]] * 4  # one prompt per batch: replica 0 runs batches 0 and 2, replica 1 batches 1 and 3
    first = two.generate(same, stops, s)
    assert first == two.generate(same, stops, s)
    assert first[0] != first[1] and first[2] != first[3]
    assert len(set(map(tuple, first))) == 4
    # one thread per replica must not leave this process's torch on one thread (CTranslate2 sets the OpenMP count)
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        two.generate(same, stops, s)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
    # one replica samples exactly as the engine did before replicas existed: the seed, then a fresh generator
    import ctranslate2

    ctranslate2.set_random_seed(s.seed)
    plain = ctranslate2.Generator(str(folder), device="cpu", inter_threads=1, intra_threads=2)
    before = []
    for p in same:
        (res,) = plain.generate_batch(
            [tokenizer.convert_ids_to_tokens(p)],
            max_length=s.max_new_tokens,
            include_prompt_in_result=False,
            end_token=stops,
            return_end_token=False,
            sampling_topk=s.top_k,
            sampling_topp=s.top_p,
            sampling_temperature=s.temperature,
        )
        before.append(res.sequences_ids[0][: s.max_new_tokens])
    assert one.generate(same, stops, s) == before
    # unset, one replica per torch thread, at most 2; set, as given
    saved = torch.get_num_threads()
    try:
        for threads, expected in ((1, 1), (2, 2), (4, 2)):
            torch.set_num_threads(threads)
            assert load_engine(cfg, adapter_dir, tokenizer, engine="ctranslate2").replicas == expected  # type: ignore[attr-defined]
    finally:
        torch.set_num_threads(saved)
    assert load_engine(cfg, adapter_dir, tokenizer, engine="ctranslate2", replicas=3).replicas == 3  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="replicas"):
        CT2Engine(folder, tokenizer, replicas=0)


def test_ctranslate2_replicas_share_batches_round_robin_and_yield_in_order(tokenizer, monkeypatch):
    """The dispatch alone, on stand-in generators that echo their prompts (the tiny model's greedy text is the same
    token for every prompt, so it cannot show the order): batch i runs on replica i mod R, results come back in the
    prompts' order, and each replica got its own seed."""
    import time
    from types import SimpleNamespace

    from dpsynth.generate.ct2_engine import replica_seed

    seen: list[tuple[int, int]] = []

    class Echo:
        def __init__(self, seed: int) -> None:
            self.seed = seed

        def generate_batch(self, batch, **kw):
            ids = [tokenizer.convert_tokens_to_ids(tokens) for tokens in batch]
            time.sleep(0.05 if self.seed == replica_seed(9, 0) else 0.0)  # replica 0 finishes last
            seen.append((self.seed, ids[0][0]))
            return [SimpleNamespace(sequences_ids=[p[:1]]) for p in ids]

    engine = CT2Engine(Path("unused"), tokenizer, threads=2, replicas=3)
    monkeypatch.setattr(engine, "_generator", lambda seed, warm: Echo(seed))
    prompts = [[i] for i in range(10, 21)]  # 11 one-token prompts, batches of 2: 6 batches, 2 rounds of 3
    s = SamplingSettings(max_new_tokens=3, seed=9, batch_size=2)
    assert engine.generate(prompts, [0], s) == prompts
    by_batch = {first: seed for seed, first in seen}
    assert [by_batch[10 + 2 * b] for b in range(6)] == [replica_seed(9, b % 3) for b in range(6)]


@pytest.mark.parametrize("parts", [1, 2, 3])
@pytest.mark.parametrize("batch_size", [1, 4, 16, 64])
@pytest.mark.parametrize("n", [0, 1, 5, 10, 100, 1000])
def test_batch_spans_cover_every_prompt_in_order_and_even_out_rounds(n, batch_size, parts):
    spans = batch_spans(n, batch_size, parts)
    assert [i for a, b in spans for i in range(a, b)] == list(range(n))  # every prompt once, in order
    sizes = [b - a for a, b in spans]
    assert all(0 < k <= batch_size for k in sizes)
    if parts == 1:  # fixed chunks, as before (HF, vLLM)
        assert sizes == [min(batch_size, n - a) for a in range(0, n, batch_size)]
    else:  # as few rounds as fixed chunks need, every round full, sizes at most one apart
        assert len(spans) % parts == 0 or len(spans) == n
        fixed = math.ceil(n / batch_size)
        assert math.ceil(len(spans) / parts) == math.ceil(fixed / parts)
        assert not sizes or max(sizes) - min(sizes) <= 1


def test_ctranslate2_replicas_get_evened_out_batches_behind_one_bar(tokenizer, monkeypatch):
    """100 prompts at batch 64 on 2 replicas: one round of 50 + 50 (not 64 + 36, which leaves a copy idle for
    most of it), and the progress bar counts the batches that run."""
    from types import SimpleNamespace

    from dpsynth.generate import sampling

    sizes: list[int] = []

    class Echo:
        def generate_batch(self, batch, **kw):
            sizes.append(len(batch))
            return [SimpleNamespace(sequences_ids=[tokenizer.convert_tokens_to_ids(t)[:1]]) for t in batch]

    totals: list[int] = []
    real_tqdm = sampling.tqdm

    def counting_tqdm(it, **kw):
        totals.append(kw["total"])
        return real_tqdm(it, **kw)

    monkeypatch.setattr(sampling, "tqdm", counting_tqdm)
    engine = CT2Engine(Path("unused"), tokenizer, threads=2, replicas=2)
    monkeypatch.setattr(engine, "_generator", lambda seed, warm: Echo())
    prompts = [[10 + i % 50] for i in range(100)]
    assert engine.generate(prompts, [0], SamplingSettings(max_new_tokens=2, batch_size=64)) == prompts
    assert sorted(sizes) == [50, 50] and totals == [2]
    hf = HFEngine(model=None, pad_id=0)
    assert hf.spans(100, SamplingSettings(batch_size=64)) == [(0, 64), (64, 100)]  # one worker: fixed chunks


def test_conversion_is_cached_and_follows_the_adapter(cfg, adapter_dir, tmp_path):
    folder = ctranslate2_model(cfg, adapter_dir, "int8")
    assert folder == converted_dir(cfg, adapter_dir, "int8") == adapter_dir.with_name("adapter.ctranslate2-int8")
    stamp = (folder / "model.bin").stat().st_mtime_ns
    assert ctranslate2_model(cfg, adapter_dir, "int8") == folder
    assert (folder / "model.bin").stat().st_mtime_ns == stamp  # reused, not converted again
    # Same folder name, different adapter weights: converted again.
    import shutil

    from safetensors.torch import load_file, save_file

    moved = tmp_path / "dp" / "adapter"
    shutil.copytree(adapter_dir, moved)
    shutil.copytree(folder, converted_dir(cfg, moved, "int8"))
    weights = load_file(str(moved / "adapter_model.safetensors"))
    save_file({k: v * 2 for k, v in weights.items()}, str(moved / "adapter_model.safetensors"))
    before = (converted_dir(cfg, moved, "int8") / "model.bin").read_bytes()
    ctranslate2_model(cfg, moved, "int8")
    assert (converted_dir(cfg, moved, "int8") / "model.bin").read_bytes() != before
    # Without an adapter, the base model's conversion goes to the model cache.
    assert converted_dir(cfg, None, "int8").parent == cfg.cache_dir


def test_auto_engine(cfg, monkeypatch):
    assert resolve_engine("auto", cfg) == "ctranslate2"
    assert resolve_engine("hf", cfg) == "hf"
    real = engine_module.importlib.util.find_spec
    monkeypatch.setattr(
        engine_module.importlib.util, "find_spec", lambda n, *a: None if n == "ctranslate2" else real(n, *a)
    )
    assert resolve_engine("auto", cfg) == "hf"


@pytest.mark.parametrize("name", ["hf", "ctranslate2"])
def test_generate_from_codes_without_adapter(name, cfg):
    """The frontier's eps = 0 row: the base model alone, texts in the order of the codes."""
    g = GenerateConfig(max_new_tokens=5, batch_size=2, engine=name, ctranslate2_quantization="float32")
    codes = [{"rating": 1}, {"rating": 4}, {"rating": 5}]
    texts = generate_from_codes(cfg, None, codes, SYSTEM, g)
    assert len(texts) == 3 and all(isinstance(t, str) and t for t in texts)
    assert texts == generate_from_codes(cfg, None, codes, SYSTEM, g)


def test_vllm_is_refused_with_its_reason_where_it_cannot_run(cfg, adapter_dir, tokenizer):
    """No GPU or no vLLM (every CI machine of this project): generate.engine=vllm is a clear configuration error."""
    from dpsynth.errors import ConfigError
    from dpsynth.generate.vllm_engine import vllm_available

    why = vllm_available()
    if why is None:
        pytest.skip("vLLM can run here: test_vllm_greedy_tokens_equal_hf checks it instead")
    with pytest.raises(ConfigError, match=r"generate\.engine=vllm"):
        load_engine(cfg, adapter_dir, tokenizer, engine="vllm")


def test_vllm_greedy_tokens_equal_hf(cfg, adapter_dir, tokenizer, prompts):
    """Where a GPU and vLLM are present: the adapter served as a LoRARequest continues the same prompt ids greedily as
    HF generate on the peft model (top_k=1), stops at the same ids, honours max_new_tokens; the base alone differs."""
    from dpsynth.generate.vllm_engine import vllm_available

    why = vllm_available()
    if why is not None:
        pytest.skip(why)
    stops = stop_token_ids(tokenizer)
    hf = load_engine(cfg, adapter_dir, tokenizer, engine="hf").generate(prompts, stops, GREEDY)
    vllm = load_engine(cfg, adapter_dir, tokenizer, engine="vllm")
    assert vllm.generate(prompts, stops, GREEDY) == hf
    assert load_engine(cfg, None, tokenizer, engine="vllm").generate(prompts, stops, GREEDY) != hf
