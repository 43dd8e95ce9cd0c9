"""DP-SGD mechanics on a tiny Llama with a LoRA adapter: gradients, clipping, noise, padding."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from dpsynth.config import LoraSettings
from dpsynth.train.batching import Collator
from dpsynth.train.lora import add_lora, trainable_parameters
from dpsynth.train.objective import per_sequence_loss
from dpsynth.train.private import make_private
from tests.conftest import make_tiny_llama

VOCAB = 300


def _examples(lengths: list[int], seed: int = 0) -> list[SimpleNamespace]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for n in lengths:
        ids = torch.randint(3, VOCAB, (n,), generator=g).tolist()
        prompt = max(1, n // 3)
        out.append(SimpleNamespace(input_ids=ids, labels=[-100] * prompt + ids[prompt:]))
    return out


def _model(seed: int = 0, device: torch.device | None = None, **lora):
    model = make_tiny_llama(VOCAB, seed=seed, attn_implementation="eager").to(device or "cpu")
    peft = add_lora(model, LoraSettings(r=4, dropout=0.0, target_modules=["q_proj", "v_proj"], **lora), seed=seed)
    # LoRA B starts at zero; move away from it so that every LoRA matrix has a non-trivial gradient.
    with torch.no_grad():
        for p in trainable_parameters(peft).values():
            p.add_(0.05 * torch.randn_like(p))
    peft.train()
    return peft


def _on_model(model, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    device = next(model.parameters()).device
    return {k: v.to(device) for k, v in batch.items()}


def _generator(model, seed: int) -> torch.Generator:
    """The noise generator on the model's device (Opacus draws the noise there)."""
    return torch.Generator(device=next(model.parameters()).device).manual_seed(seed)


def _forward(model, batch):
    batch = _on_model(model, batch)
    out = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
    )
    return per_sequence_loss(out.logits, batch["labels"])


def _loop_gradients(model, examples) -> list[dict[str, torch.Tensor]]:
    """Per-example gradients the slow, obviously correct way: one example at a time, no padding."""
    collate = Collator(pad_id=0)
    grads = []
    for e in examples:
        model.zero_grad()
        _forward(model, collate([e])).sum().backward()
        grads.append({n: p.grad.detach().clone() for n, p in trainable_parameters(model).items()})
    model.zero_grad()
    return grads


@pytest.mark.parametrize("freeze_a", [False, True])
def test_per_sample_gradients_match_a_per_example_loop(device, freeze_a):
    model = _model(device=device, freeze_a=freeze_a)
    examples = _examples([7, 12, 4, 9])
    expected = _loop_gradients(model, examples)
    params = trainable_parameters(model)
    opt = torch.optim.SGD(params.values(), lr=0.1)
    private = make_private(
        model,
        opt,
        noise_multiplier=0.0,
        max_grad_norm=1.0,
        expected_batch_size=4,
        mode="hooks",
        noise_generator=_generator(model, 0),
    )
    _forward(model, Collator(pad_id=0)(examples)).mean().backward()
    # q and v in two layers, A and B each; with train.lora.freeze_a the B matrices only (FFA-LoRA)
    assert sorted(n.partition(".lora_")[2][0] for n in params) == (["B"] * 4 if freeze_a else ["A"] * 4 + ["B"] * 4)
    for name, p in params.items():
        assert p.grad_sample.shape == (4, *p.shape)
        for i in range(4):
            torch.testing.assert_close(p.grad_sample[i], expected[i][name], atol=1e-5, rtol=1e-4)
    private.detach()


@pytest.mark.parametrize(("mode", "freeze_a"), [("hooks", False), ("ghost", False), ("hooks", True), ("ghost", True)])
def test_clipped_update_has_the_configured_norm(mode, freeze_a, device):
    """One example with a gradient far above the bound, no noise: the update's norm is exactly max_grad_norm (with
    train.lora.freeze_a, over the B matrices alone, and the A matrices do not move)."""
    model = _model(device=device, freeze_a=freeze_a)
    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if ".lora_A." in n and not p.requires_grad}
    assert len(frozen) == (4 if freeze_a else 0)
    params = trainable_parameters(model)
    example = _examples([10])
    raw_norm = torch.stack([g.norm() for g in _loop_gradients(model, example)[0].values()]).norm().item()
    max_grad_norm = raw_norm / 10  # so clipping must act
    opt = torch.optim.SGD(params.values(), lr=1.0)
    private = make_private(
        model,
        opt,
        noise_multiplier=0.0,
        max_grad_norm=max_grad_norm,
        expected_batch_size=1,
        mode=mode,
        noise_generator=_generator(model, 0),
    )
    before = {n: p.detach().clone() for n, p in params.items()}
    loss = (
        private.criterion(*_logits_and_labels(model, example))
        if mode == "ghost"
        else _forward(model, Collator(pad_id=0)(example)).mean()
    )
    loss.backward()
    private.optimizer.step()
    update = torch.stack([(before[n] - p.detach()).norm() for n, p in params.items()]).norm().item()
    assert update == pytest.approx(max_grad_norm, rel=1e-4)
    assert private.noisy_steps == 1
    now = dict(model.named_parameters())
    assert all(torch.equal(now[n], value) for n, value in frozen.items())


def _logits_and_labels(model, examples):
    batch = _on_model(model, Collator(pad_id=0)(examples))
    out = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
    )
    return out.logits, batch["labels"]


def test_noise_on_zero_gradients_has_the_calibrated_scale(device):
    """An empty Poisson batch still takes a noisy step, and its scale is sigma * C / expected batch size."""
    model = _model(device=device)
    params = trainable_parameters(model)
    sigma, clip, batch = 2.0, 0.5, 8
    opt = torch.optim.SGD(params.values(), lr=1.0)
    private = make_private(
        model,
        opt,
        noise_multiplier=sigma,
        max_grad_norm=clip,
        expected_batch_size=batch,
        mode="hooks",
        noise_generator=_generator(model, 1),
    )
    before = torch.cat([p.detach().flatten().clone() for p in params.values()])
    private.prepare_empty_batch()
    private.optimizer.step()
    change = torch.cat([p.detach().flatten() for p in params.values()]) - before
    assert change.numel() > 500
    assert change.std().item() == pytest.approx(sigma * clip / batch, rel=0.15)
    assert abs(change.mean().item()) < 0.1 * sigma * clip / batch
    assert private.noisy_steps == 1


def test_noise_differs_across_steps(device):
    model = _model(device=device)
    params = trainable_parameters(model)
    opt = torch.optim.SGD(params.values(), lr=1.0)
    private = make_private(
        model,
        opt,
        noise_multiplier=1.0,
        max_grad_norm=1.0,
        expected_batch_size=1,
        mode="hooks",
        noise_generator=_generator(model, 3),
    )
    changes = []
    for _ in range(2):
        before = torch.cat([p.detach().flatten().clone() for p in params.values()])
        private.prepare_empty_batch()
        private.optimizer.step()
        private.optimizer.zero_grad()
        changes.append(torch.cat([p.detach().flatten() for p in params.values()]) - before)
    assert not torch.allclose(changes[0], changes[1])


def test_padding_does_not_change_a_sequence_loss_or_gradient(device):
    """The same sequence alone and padded to a longer batch (right padding, -100 labels) gives the same results."""
    model = _model(device=device)
    target = _examples([6], seed=5)[0]
    longer = _examples([15], seed=6)[0]
    params = trainable_parameters(model)
    opt = torch.optim.SGD(params.values(), lr=0.1)
    private = make_private(
        model,
        opt,
        noise_multiplier=0.0,
        max_grad_norm=1.0,
        expected_batch_size=2,
        mode="hooks",
        noise_generator=_generator(model, 0),
    )
    collate = Collator(pad_id=0)
    alone = _forward(model, collate([target]))
    alone.mean().backward()
    g_alone = {n: p.grad_sample[0].clone() for n, p in params.items()}
    private.optimizer.zero_grad()
    padded = _forward(model, collate([target, longer]))
    padded.mean().backward()
    torch.testing.assert_close(padded[0], alone[0], atol=1e-6, rtol=1e-5)
    for n, p in params.items():
        torch.testing.assert_close(p.grad_sample[0], g_alone[n], atol=1e-6, rtol=1e-4)
