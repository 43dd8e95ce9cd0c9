"""The fast training path against the slow, obviously correct one: bf16 autocast, logits only where labels are set,
and the frozen-prefix cache must leave every example's gradient of the trainable weights as the full float32 model
computes it one example at a time (tolerances stated per test)."""

from __future__ import annotations

import pytest
import torch

from dpsynth.config import LoraSettings
from dpsynth.train.batching import Collator, indexed
from dpsynth.train.forward import TrainForward
from dpsynth.train.lora import add_lora, trainable_parameters
from dpsynth.train.objective import HeadLoss, per_sequence_loss
from dpsynth.train.precision import cpu_has_native_bf16, resolve_precision
from dpsynth.train.prefix import PrefixCache
from dpsynth.train.private import make_private
from tests.conftest import make_tiny_llama
from tests.train.test_private import VOCAB, _examples, _generator, _on_model

COLLATE = Collator(pad_id=0)
LENGTHS = [7, 12, 4, 9, 15]


def _model(layers: int = 2, top_k: int | None = None, seed: int = 0, device: torch.device | None = None):
    model = make_tiny_llama(VOCAB, seed=seed, num_hidden_layers=layers).to(device or "cpu")
    settings = LoraSettings(r=4, dropout=0.0, target_modules=["q_proj", "v_proj"], top_k_layers=top_k)
    peft = add_lora(model, settings, seed=seed)
    with torch.no_grad():  # LoRA B starts at zero; move away so that every LoRA matrix has a non-trivial gradient
        for p in trainable_parameters(peft).values():
            p.add_(0.05 * torch.randn_like(p))
    peft.train()
    return peft


def _loop_gradients(model, examples) -> list[dict[str, torch.Tensor]]:
    """Reference: the full model's logits in float32, one example at a time, no padding, no per-sample machinery."""
    grads = []
    for e in examples:
        model.zero_grad()
        batch = _on_model(model, COLLATE([e]))
        out = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
        )
        per_sequence_loss(out.logits, batch["labels"]).sum().backward()
        grads.append({n: p.grad.detach().clone() for n, p in trainable_parameters(model).items()})
    model.zero_grad()
    return grads


def _dp_grad_samples(model, examples, forward: TrainForward) -> tuple[dict[str, torch.Tensor], object]:
    params = trainable_parameters(model)
    private = make_private(
        model,
        torch.optim.SGD(params.values(), lr=0.1),
        noise_multiplier=0.0,
        max_grad_norm=1e6,
        expected_batch_size=len(examples),
        mode="hooks",
        noise_generator=_generator(model, 0),
        loss=HeadLoss(forward.head),
    )
    forward.losses(COLLATE(examples)).mean().backward()
    samples = {n: p.grad_sample.detach().clone() for n, p in params.items()}
    return samples, private


def _norms(per_param: list[dict[str, torch.Tensor]]) -> torch.Tensor:
    return torch.stack([torch.stack([g.norm() for g in d.values()]).norm() for d in per_param])


def _assert_within_bf16_bounds(samples: dict[str, torch.Tensor], expected: list[dict[str, torch.Tensor]]):
    """float32 per-sample gradients, each example's within 2% (relative L2) of the float32 loop's and its norm within
    1%; returns them per example."""
    assert all(gs.dtype == torch.float32 for gs in samples.values())
    got = [{n: gs[i] for n, gs in samples.items()} for i in range(len(expected))]
    for i in range(len(expected)):
        diff = torch.cat([(got[i][n] - expected[i][n]).flatten() for n in expected[i]]).norm()
        ref = torch.cat([g.flatten() for g in expected[i].values()]).norm()
        assert diff / ref < 0.02, (i, (diff / ref).item())
    torch.testing.assert_close(_norms(got), _norms(expected), rtol=0.01, atol=0.0)
    return got


def test_float32_fast_path_matches_the_per_example_loop(device):
    """Logits only at labelled positions, float32: per-sample gradients equal the loop's (atol 1e-6, rtol 1e-4)."""
    model = _model(device=device)
    examples = indexed(_examples(LENGTHS))
    expected = _loop_gradients(model, examples)
    samples, private = _dp_grad_samples(model, examples, TrainForward(model, device))
    for name, gs in samples.items():
        for i in range(len(examples)):
            torch.testing.assert_close(gs[i], expected[i][name], atol=1e-6, rtol=1e-4)
    private.detach()


def test_bf16_per_sample_gradients_and_norms_match_a_float32_loop(device):
    """Under bf16 autocast, per-sample gradients stay float32 and match the float32 loop.

    Tolerance: every example's gradient (all LoRA tensors together) within 2% relative L2 error of the float32
    one, and its norm (what clipping uses) within 1% (measured: about 0.8% and 0.4%). bfloat16 keeps 8 significant
    bits (relative rounding 2^-9 = 0.2%); a few bf16 matmuls and bf16 logits stay well inside these bounds. Without
    the float32 grad samplers the per-sample gradients come out bfloat16 (the dtype assertion catches it). On CUDA
    the same bounds hold against the float32 loop on the GPU.
    """
    model = _model(device=device)
    examples = indexed(_examples(LENGTHS, seed=1))
    expected = _loop_gradients(model, examples)
    seen: list[torch.dtype] = []
    base_q = model.get_base_model().model.layers[0].self_attn.q_proj.base_layer
    handle = base_q.register_forward_hook(lambda _m, _i, out: seen.append(out.dtype))
    forward = TrainForward(model, device, autocast_dtype=torch.bfloat16)
    samples, private = _dp_grad_samples(model, examples, forward)
    handle.remove()
    assert seen and all(d == torch.bfloat16 for d in seen)  # the frozen matmuls did run in bf16
    _assert_within_bf16_bounds(samples, expected)
    # Clipping, accumulation and noise: the summed gradient and the step are float32.
    private.optimizer.step()
    params = trainable_parameters(model)
    assert all(p.dtype == torch.float32 and p.summed_grad.dtype == torch.float32 for p in params.values())
    private.detach()


def test_bf16_base_weights_as_training_loads_them_match_a_float32_loop(device):
    """``model.dtype=auto`` loads the base model in bfloat16 on CUDA, and for training on a CPU under bf16 autocast
    (:func:`dpsynth.train.precision.training_model_config`); peft keeps the LoRA weights float32 there
    (``autocast_adapter_dtype``). That path's per-sample gradients and norms stay within the bf16 test's bounds (2%,
    1%) of a float32 loop over the same (bf16-rounded) base weights, and clipping, noise and the step stay float32."""
    import copy

    base = make_tiny_llama(VOCAB, seed=0).to(device=device, dtype=torch.bfloat16)
    settings = LoraSettings(r=4, dropout=0.0, target_modules=["q_proj", "v_proj"])
    model = add_lora(base, settings, seed=0)
    params = trainable_parameters(model)
    assert all(p.dtype == torch.float32 for p in params.values())
    with torch.no_grad():
        for p in params.values():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())).to(device))
    model.train()
    reference = copy.deepcopy(model).float()  # the same values, float32 arithmetic
    examples = indexed(_examples(LENGTHS, seed=1))
    expected = _loop_gradients(reference, examples)
    samples, private = _dp_grad_samples(model, examples, TrainForward(model, device, autocast_dtype=torch.bfloat16))
    got = _assert_within_bf16_bounds(samples, expected)
    # A step where clipping acts (every example's norm is far above 1e-3) and noise is drawn on the device: float32.
    clip = 1e-3
    assert bool((_norms(got) > 10 * clip).all())
    private.optimizer.max_grad_norm, private.optimizer.noise_multiplier = clip, 1.0
    before = {n: p.detach().clone() for n, p in params.items()}
    private.optimizer.step()
    assert all(p.dtype == torch.float32 and p.summed_grad.dtype == torch.float32 for p in params.values())
    assert all(not torch.equal(before[n], p.detach()) for n, p in params.items())
    # Clipping acted: the summed clipped gradients have norm at most B * C. The noise Opacus added (its grad is
    # (sum + noise) / B) is float32 with standard deviation sigma * C = C.
    batch = len(examples)
    summed = torch.cat([p.summed_grad.flatten() for p in params.values()])
    assert summed.norm().item() <= batch * clip * (1 + 1e-4)
    noise = torch.cat([(p.grad * batch - p.summed_grad).flatten() for p in params.values()])
    assert 0.8 * clip < noise.std().item() < 1.25 * clip
    private.detach()


def test_precision_auto_follows_the_cpu_flags(tmp_path):
    flags = tmp_path / "cpuinfo"
    flags.write_text("processor : 0\nflags : fpu avx2 avx512f avx512_bf16\n")
    assert cpu_has_native_bf16.__wrapped__(str(flags)) is True
    flags.write_text("processor : 0\nflags : fpu avx2\n")
    assert cpu_has_native_bf16.__wrapped__(str(flags)) is False
    expected = torch.bfloat16 if cpu_has_native_bf16() else None
    assert resolve_precision("auto", torch.device("cpu")) == expected


def test_the_default_top_8_on_a_deeper_model_and_none_on_every_block():
    def blocks(settings: LoraSettings) -> set[int]:
        peft = add_lora(make_tiny_llama(VOCAB, seed=0, num_hidden_layers=10), settings, seed=0)
        return {int(n.split("layers.")[1].split(".")[0]) for n in trainable_parameters(peft)}

    assert blocks(LoraSettings()) == set(range(2, 10))  # the default since 2026-12-03: the top 8
    assert blocks(LoraSettings(top_k_layers=None)) == set(range(10))


def _prepared_tiny_dp_run(tmp_path, tiny_model_dir, *overrides: str):
    """The config of a 2-step DP arm on the tiny model's top block (demo data), prepared in ``tmp_path / "run"``."""
    from dpsynth import api
    from dpsynth.config import load_config

    cfg = load_config(
        None,
        [
            f"model.name={tiny_model_dir}",
            "data.demo_records=40",
            "data.max_tokens=24",
            "train.arms=[dp]",
            "train.batch_size=8",
            "train.max_steps=2",
            "train.lora.top_k_layers=1",
            "privacy.target_epsilon=null",
            "privacy.noise_multiplier=0.5",
            *overrides,
        ],
    )
    api.prepare(cfg, tmp_path / "run")
    return cfg


def test_an_architecture_the_cache_does_not_fit_trains_without_it(tmp_path, tiny_model_dir, monkeypatch, caplog):
    """The one-example probe fails (as for a model that rescales inputs_embeds): a warning, no full build, and the
    arm trains all the same."""
    from dpsynth import api
    from dpsynth.errors import DPSynthError
    from dpsynth.rundir import RunDir, read_json
    from dpsynth.train import prefix

    def refuse(*args, **kwargs):
        raise DPSynthError("prefix cache: the model's output through the cache differs from the full model's")

    monkeypatch.setattr(prefix, "_self_check", refuse)
    built: list[int] = []
    real_build = PrefixCache.build.__func__  # type: ignore[attr-defined]

    def spy(cls, model, examples, **kwargs):
        built.append(len(examples))
        return real_build(cls, model, examples, **kwargs)

    monkeypatch.setattr(PrefixCache, "build", classmethod(spy))
    cfg = _prepared_tiny_dp_run(tmp_path, tiny_model_dir)
    with caplog.at_level("WARNING"):
        api.train(cfg, tmp_path / "run", progress=False)
    assert built == [1]  # the probe only
    assert "prefix cache not used" in caplog.text
    assert read_json(RunDir(tmp_path / "run").privacy_json("dp"))["steps"] == 2


def test_top_k_layers_puts_lora_on_the_top_blocks_only():
    model = _model(layers=4, top_k=2)
    layers = {int(n.split("layers.")[1].split(".")[0]) for n in trainable_parameters(model)}
    assert layers == {2, 3}
    small = _model(layers=2, top_k=3)  # the default K on a model with fewer blocks: every block
    assert {int(n.split("layers.")[1].split(".")[0]) for n in trainable_parameters(small)} == {0, 1}


@pytest.mark.parametrize("autocast_dtype", [None, torch.bfloat16])
def test_prefix_cache_gives_the_same_per_example_gradients(autocast_dtype, device):
    """With and without the cache: per-sample gradients equal (float32: atol 1e-6, rtol 1e-5; bf16: same casts on
    the same values, atol 1e-4 relative to the gradient's scale), and in float32 both equal the per-example loop."""
    model = _model(layers=4, top_k=2, device=device)
    examples = indexed(_examples(LENGTHS, seed=2))
    without, private = _dp_grad_samples(model, examples, TrainForward(model, device, autocast_dtype))
    private.detach()
    for p in trainable_parameters(model).values():
        p.grad_sample = None
        p.grad = None
    forward = TrainForward(model, device, autocast_dtype)
    forward.cache = PrefixCache.build(
        model, examples, start=2, collate=COLLATE, batch_size=2, device=device, context=forward.context
    )
    assert forward.cache.storage.shape == (sum(LENGTHS), 32)
    with_cache, private = _dp_grad_samples(model, examples, forward)
    private.detach()
    for name in without:
        if autocast_dtype is None:
            torch.testing.assert_close(with_cache[name], without[name], atol=1e-6, rtol=1e-5)
        else:
            scale = without[name].abs().max().item()
            torch.testing.assert_close(with_cache[name], without[name], atol=1e-4 * scale, rtol=1e-3)
    if autocast_dtype is None:
        expected = _loop_gradients(model, examples)
        for name, gs in with_cache.items():
            for i in range(len(examples)):
                torch.testing.assert_close(gs[i], expected[i][name], atol=1e-6, rtol=1e-4)


def test_prefix_cache_spills_to_a_memory_mapped_file(tmp_path):
    model = _model(layers=3, top_k=1)
    examples = indexed(_examples(LENGTHS, seed=3))
    kwargs = {"start": 2, "collate": COLLATE, "batch_size": 4, "device": torch.device("cpu")}
    in_memory = PrefixCache.build(model, examples, **kwargs)
    mapped = PrefixCache.build(model, examples, **kwargs, memory_mb=0, spill_dir=tmp_path)
    assert not list(tmp_path.iterdir())  # unlinked once mapped: nothing private outlives the process
    assert mapped.storage.untyped_storage().filename is not None  # backed by the file, not by anonymous memory
    assert in_memory.storage.untyped_storage().filename is None
    torch.testing.assert_close(mapped.storage, in_memory.storage, atol=0, rtol=0)


def test_a_shared_prefix_cache_is_built_once_and_reused(tmp_path):
    """train.prefix_cache_dir: the first run builds and saves the cache, a run over the same examples and model loads
    it (memory-mapped, equal to the built one, checked against the model), other examples get another key."""
    from dpsynth.train.prefix import cache_key, self_check

    model = _model(layers=3, top_k=1)
    examples = indexed(_examples(LENGTHS, seed=3))
    kwargs = {"start": 2, "collate": COLLATE, "batch_size": 4, "device": torch.device("cpu")}
    builds: list[PrefixCache] = []

    def build():
        builds.append(PrefixCache.build(model, examples, **kwargs))
        return builds[-1]

    def check(c):
        self_check(model, c, examples, COLLATE, torch.device("cpu"))

    key = cache_key("tiny", 2, "None", examples)
    first = PrefixCache.shared(tmp_path, key, build, check)
    second = PrefixCache.shared(tmp_path, key, build, check)
    assert len(builds) == 1 and [p.name for p in tmp_path.iterdir()] == [f"prefix-{key}.pt"]
    assert second is not first and second.storage.data_ptr() != first.storage.data_ptr()  # loaded, not rebuilt
    torch.testing.assert_close(second.storage, first.storage, atol=0, rtol=0)
    assert (second.offsets, second.lengths, second.start) == (first.offsets, first.lengths, first.start)
    assert cache_key("tiny", 2, "None", examples[:-1]) != key and cache_key("tiny", 1, "None", examples) != key
    other = _model(layers=3, top_k=1, seed=1)  # a cache that does not fit the model is refused, not used
    with pytest.raises(Exception, match="differs from the full model"):
        self_check(other, second, examples, COLLATE, torch.device("cpu"))


def test_the_self_check_allows_bf16_rounding_and_refuses_a_cache_of_another_model():
    """Under bf16 autocast a cache built in batches differs from a lone pass by rounding (kernels differ by shape:
    0.8% of the largest value on SmolLM2 with AMX), which the check must allow, while a cache of other weights must
    still be refused; in float32 the tolerance stays 1e-3."""
    import contextlib

    from dpsynth.train.prefix import _self_check, check_tolerance, self_check

    def bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)

    model = _model(layers=3, top_k=1)
    examples = indexed(_examples(LENGTHS, seed=3))
    cpu = torch.device("cpu")
    cache = PrefixCache.build(model, examples, start=2, collate=COLLATE, batch_size=4, device=cpu, context=bf16)
    self_check(model, cache, examples, COLLATE, cpu, bf16)
    other = _model(layers=3, top_k=1, seed=1)
    with pytest.raises(Exception, match="differs from the full model"):
        self_check(other, cache, examples, COLLATE, cpu, bf16)
    assert check_tolerance(model, cpu) == 1e-3
    with bf16():
        assert check_tolerance(model, cpu) == 4 * torch.finfo(torch.bfloat16).eps
    # rounding noise at the bf16 level (0.8% of the largest state) passes under bf16 and fails in float32
    noisy = PrefixCache(
        cache.storage * (1 + 0.008 * torch.sign(torch.randn_like(cache.storage))),
        cache.offsets,
        cache.lengths,
        cache.start,
    )
    longest = max(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    _self_check(model, noisy, examples, longest, COLLATE, cpu, bf16)
    with pytest.raises(Exception, match="differs from the full model"):
        _self_check(model, noisy, examples, longest, COLLATE, cpu, contextlib.nullcontext)


def test_prefix_cache_refuses_trainable_blocks_below_the_split():
    model = _model(layers=4, top_k=2)
    examples = indexed(_examples([5, 6]))
    with pytest.raises(Exception, match="below block 3"):
        PrefixCache.build(model, examples, start=3, collate=COLLATE, batch_size=2, device=torch.device("cpu"))


def test_dp_arm_trains_through_the_prefix_cache(tmp_path, tiny_model_dir, monkeypatch):
    """The DP arm end to end with LoRA on the top block: the cache is used, the loss falls, the adapter (top block
    only) reloads onto the full base model and reproduces the trained model (train/verify.py's round trip)."""
    from dpsynth import api
    from dpsynth.config import load_config
    from dpsynth.rundir import RunDir, read_json, read_jsonl

    built: list[PrefixCache] = []
    real_build = PrefixCache.build

    def spy(*args, **kwargs):
        built.append(real_build(*args, **kwargs))
        return built[-1]

    monkeypatch.setattr(PrefixCache, "build", spy)
    cfg = load_config(
        None,
        [
            f"model.name={tiny_model_dir}",
            "data.demo_records=80",
            "data.max_tokens=24",
            "train.arms=[dp]",
            "train.batch_size=16",
            "train.physical_batch_size=8",
            "train.max_steps=16",
            "train.learning_rate=0.05",
            "train.epochs=10",
            "train.noise_seed=0",
            "train.lora.top_k_layers=1",
            "privacy.target_epsilon=null",
            "privacy.noise_multiplier=0.5",
        ],
    )
    out = tmp_path / "run"
    api.prepare(cfg, out)
    api.train(cfg, out, progress=False)
    run = RunDir(out)
    # a one-example probe checks that the cache fits this architecture, then the whole cache is built once
    assert len(built) == 2 and len(built[0].lengths) == 1 and len(built[1].lengths) > 1
    assert all(c.start == 1 for c in built)
    losses = [r["loss"] for r in read_jsonl(run.train_log("dp")) if "loss" in r]
    assert len(losses) == 16
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4 - 0.02, str([round(x, 3) for x in losses])
    privacy = read_json(run.privacy_json("dp"))
    assert privacy["checks"]["roundtrip"]["generated_tokens"] > 0
    keys = read_json(run.adapter("dp") / "adapter_config.json")["layers_to_transform"]
    assert keys == [1]


@pytest.mark.parametrize("mode", ["hooks", "ghost"])
def test_clipping_through_the_head_loss_bounds_the_update(mode, device):
    """One example far above the bound, no noise, the loop's criterion on hidden states: the update has norm C."""
    model = _model(device=device)
    example = indexed(_examples([10], seed=4))
    raw = torch.stack([g.norm() for g in _loop_gradients(model, example)[0].values()]).norm().item()
    clip = raw / 10
    params = trainable_parameters(model)
    forward = TrainForward(model, device)
    private = make_private(
        model,
        torch.optim.SGD(params.values(), lr=1.0),
        noise_multiplier=0.0,
        max_grad_norm=clip,
        expected_batch_size=1,
        mode=mode,
        noise_generator=_generator(model, 0),
        loss=HeadLoss(forward.head),
    )
    before = {n: p.detach().clone() for n, p in params.items()}
    batch = COLLATE(example)
    if mode == "ghost":
        private.criterion(forward.hidden(batch), batch["labels"].to(device)).backward()
    else:
        forward.losses(batch).mean().backward()
    private.optimizer.step()
    update = torch.stack([(before[n] - p.detach()).norm() for n, p in params.items()]).norm().item()
    assert update == pytest.approx(clip, rel=1e-4)
    private.detach()


@pytest.mark.parametrize(("model_dtype", "weights"), [("auto", torch.bfloat16), ("float32", torch.float32)])
def test_training_under_bf16_autocast_loads_the_base_weights_in_bf16(
    model_dtype, weights, tmp_path, tiny_model_dir, monkeypatch
):
    """Where training runs under bf16 autocast (forced here: ``train.precision=bfloat16``), ``model.dtype=auto`` loads
    the frozen base weights in bfloat16 for training and for its save-and-reload check, with LoRA float32 and the
    prefix cache built from them; an explicit ``model.dtype=float32`` is kept."""
    from dpsynth import api
    from dpsynth.rundir import RunDir, read_json
    from dpsynth.train import loop

    loaded: list[torch.dtype] = []
    trained: list[torch.dtype] = []
    real_load, real_add = loop.load_model, loop.add_lora

    def load_spy(cfg, *, device=None):
        model = real_load(cfg, device=device)
        loaded.append(model.dtype)
        return model

    def add_spy(base, settings, *, seed):
        peft = real_add(base, settings, seed=seed)
        trained.extend({p.dtype for p in trainable_parameters(peft).values()})
        return peft

    from dpsynth.train import forward as forward_module

    keys: list[str] = []
    cached: list[torch.dtype] = []
    real_key, real_build = forward_module.cache_key, PrefixCache.build.__func__  # type: ignore[attr-defined]

    def key_spy(model, *args):
        keys.append(model)
        return real_key(model, *args)

    def build_spy(cls, *args, **kwargs):
        cache = real_build(cls, *args, **kwargs)
        cached.append(cache.storage.dtype)
        return cache

    monkeypatch.setattr(loop, "load_model", load_spy)
    monkeypatch.setattr(loop, "add_lora", add_spy)
    monkeypatch.setattr(forward_module, "cache_key", key_spy)
    monkeypatch.setattr(PrefixCache, "build", classmethod(build_spy))
    cfg = _prepared_tiny_dp_run(tmp_path, tiny_model_dir, f"model.dtype={model_dtype}", "train.precision=bfloat16")
    api.train(cfg, tmp_path / "run", progress=False)
    assert loaded == [weights, weights]  # the arm's model, then the reload that checks the saved adapter
    assert trained == [torch.float32]
    # the prefix cache holds what these weights compute, under a key that names them (a float32 cache is another)
    assert cached == [weights, weights]  # the one-example probe, then the build
    assert len(keys) == 1 and keys[0].endswith(f":{weights}")
    privacy = read_json(RunDir(tmp_path / "run").privacy_json("dp"))
    assert privacy["steps"] == 2
    assert privacy["checks"]["roundtrip"]["reload_max_logit_diff"] == 0.0


def test_prefix_cache_keeps_each_blocks_attention_type():
    """A decoder that picks each block's mask and rotary table by its index in ``config.layer_types`` (Gemma 3):
    blocks 2-3 are sliding-window blocks (window 3, shorter than the examples) under full-attention blocks 0-1, so
    a cache that ran them as blocks 0-1 would give them full attention. Per-sample gradients through the cache equal
    the per-example loop's, and the config is left whole."""
    from transformers import Gemma3ForCausalLM, Gemma3TextConfig

    torch.manual_seed(0)
    types = ["full_attention", "full_attention", "sliding_attention", "sliding_attention"]
    cfg = Gemma3TextConfig(
        vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=4, num_attention_heads=4,
        num_key_value_heads=1, head_dim=8, sliding_window=3, layer_types=types, max_position_embeddings=64,
        query_pre_attn_scalar=8, final_logit_softcapping=None, attn_logit_softcapping=None,
    )  # fmt: skip
    settings = LoraSettings(r=4, dropout=0.0, target_modules=["q_proj", "v_proj"], top_k_layers=2)
    model = add_lora(Gemma3ForCausalLM(cfg).eval(), settings, seed=0)
    with torch.no_grad():
        for p in trainable_parameters(model).values():
            p.add_(0.05 * torch.randn_like(p))
    model.train()
    examples = indexed(_examples(LENGTHS, seed=2))
    forward = TrainForward(model, torch.device("cpu"))
    forward.cache = PrefixCache.build(
        model, examples, start=2, collate=COLLATE, batch_size=2, device=torch.device("cpu"), context=forward.context
    )
    assert model.get_base_model().config.layer_types == types
    with_cache, private = _dp_grad_samples(model, examples, forward)
    private.detach()
    expected = _loop_gradients(model, examples)
    for name, gs in with_cache.items():
        for i in range(len(examples)):
            torch.testing.assert_close(gs[i], expected[i][name], atol=1e-6, rtol=1e-4)


def test_a_softcapped_output_layer_is_refused():
    """Gemma 2 squashes its logits after the output layer; the head-only loss would train another objective."""
    from dpsynth.errors import DPSynthError

    model = make_tiny_llama(VOCAB)
    model.config.final_logit_softcapping = 30.0
    with pytest.raises(DPSynthError, match="final_logit_softcapping"):
        TrainForward(model, torch.device("cpu"))
