"""The frozen output layer's loss a chunk of positions at a time (:func:`dpsynth.train.objective.head_sequence_loss`)
against autograd through the whole layer: the same per-sequence losses, the same gradients of the hidden states under
any weighting of the losses, the same per-example LoRA gradients through Opacus, and a trainable layer left to
autograd. Most chunks here are one to three positions, so a batch runs through many of them."""

from __future__ import annotations

import pytest
import torch

from dpsynth.train import objective
from dpsynth.train.batching import indexed
from dpsynth.train.forward import TrainForward
from dpsynth.train.lora import trainable_parameters
from dpsynth.train.objective import HeadLoss, head_sequence_loss, per_sequence_loss
from dpsynth.train.private import make_private
from tests.train.test_fastpath import COLLATE, LENGTHS, _dp_grad_samples, _loop_gradients, _model
from tests.train.test_private import VOCAB, _examples, _generator

HIDDEN = 16


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.nn.Linear, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    head = torch.nn.Linear(HIDDEN, VOCAB, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.randn(VOCAB, HIDDEN, generator=g))
    head.requires_grad_(False)
    hidden = torch.randn(4, 9, HIDDEN, generator=g)
    labels = torch.randint(0, VOCAB, (4, 9), generator=g)
    labels[:, :3] = -100  # a prompt
    labels[2, 6:] = -100  # padding
    weights = torch.rand(4, generator=g) + 0.5  # per-sequence weights, as ghost clipping's second pass applies
    return hidden, labels, head, weights


def _loss_and_grad(hidden, labels, head, weights, chunk_elements, dtype=None):
    h = hidden.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=dtype, enabled=dtype is not None):
        losses = head_sequence_loss(h, labels, head, chunk_elements=chunk_elements)
    (losses * weights).sum().backward()
    return losses.detach(), h.grad


@pytest.mark.parametrize("positions", [1, 2, 3, 100])
def test_chunked_loss_and_hidden_gradient_equal_autograds_in_float32(positions):
    hidden, labels, head, weights = _inputs()
    want_loss, want_grad = _loss_and_grad(hidden, labels, head, weights, chunk_elements=0)
    got_loss, got_grad = _loss_and_grad(hidden, labels, head, weights, chunk_elements=positions * VOCAB)
    torch.testing.assert_close(want_loss, per_sequence_loss(head(hidden), labels), atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got_loss, want_loss, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(got_grad, want_grad, atol=1e-6, rtol=1e-5)
    assert got_loss.dtype == torch.float32 and got_grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("hidden_dtype", "weight_dtype"),
    [(torch.float32, torch.float32), (torch.float32, torch.bfloat16), (torch.bfloat16, torch.bfloat16)],
)
def test_chunked_loss_under_bf16_autocast_stays_within_bf16_rounding_of_autograd(hidden_dtype, weight_dtype):
    """Under bf16 autocast both paths round the logits and the gradient's matmul to bf16; the chunked one scales by
    the loss's gradient after that matmul, autograd before it. Tolerance: losses within 1e-3 (they are float32 after
    the same bf16 logits), each sequence's hidden-state gradient within 2% relative L2 (bf16 keeps 8 bits: 0.4% a
    rounding), and in the hidden states' dtype, as autograd's. The weights as training loads them (bf16 on a CPU
    with native bf16) and as ``model.dtype=float32`` does, with a frozen bias."""
    hidden, labels, head, weights = _inputs(seed=1)
    head = torch.nn.Linear(HIDDEN, VOCAB, bias=True).requires_grad_(False)
    with torch.no_grad():
        head.weight.normal_(generator=torch.Generator().manual_seed(7))
        head.bias.uniform_(-1, 1, generator=torch.Generator().manual_seed(8))
    head.to(weight_dtype)
    hidden = hidden.to(hidden_dtype)
    want_loss, want_grad = _loss_and_grad(hidden, labels, head, weights, 0, dtype=torch.bfloat16)
    got_loss, got_grad = _loss_and_grad(hidden, labels, head, weights, 2 * VOCAB, dtype=torch.bfloat16)
    assert got_grad.dtype == want_grad.dtype == hidden_dtype
    torch.testing.assert_close(got_loss, want_loss, atol=1e-3, rtol=1e-3)
    for i in range(hidden.shape[0]):
        rel = (got_grad[i].float() - want_grad[i].float()).norm() / want_grad[i].float().norm()
        assert rel < 0.02, (i, rel.item())


def test_a_row_without_labelled_positions_has_loss_and_gradient_zero():
    hidden, labels, head, weights = _inputs(seed=4)
    labels[1] = -100  # a row wholly prompt and padding
    got_loss, got_grad = _loss_and_grad(hidden, labels, head, weights, chunk_elements=VOCAB)
    _, want_grad = _loss_and_grad(hidden, labels, head, weights, chunk_elements=0)
    assert got_loss[1] == 0 and got_grad[1].abs().sum() == 0
    torch.testing.assert_close(got_grad, want_grad, atol=1e-6, rtol=1e-5)


def test_no_gradient_matmul_without_gradients_and_no_second_order_gradient(monkeypatch):
    """Under torch.no_grad only the logits' matmuls run (the gradient's is skipped); a second-order gradient is
    refused rather than silently zero (the gradient is computed in the forward pass, outside any graph)."""
    hidden, labels, head, _ = _inputs(seed=5)
    calls = []
    matmul = torch.matmul
    monkeypatch.setattr(torch, "matmul", lambda *a, **k: calls.append(1) or matmul(*a, **k))
    with torch.no_grad():
        head_sequence_loss(hidden, labels, head, chunk_elements=VOCAB)
    assert calls == []
    h = hidden.clone().requires_grad_(True)
    head_sequence_loss(h, labels, head, chunk_elements=VOCAB)
    assert calls  # with gradients, the forward pass does run it
    monkeypatch.setattr(torch, "matmul", matmul)
    (grad,) = torch.autograd.grad(head_sequence_loss(h, labels, head, chunk_elements=VOCAB).sum(), h, create_graph=True)
    with pytest.raises(RuntimeError, match=r"once_differentiable|differentiate twice|does not require grad"):
        grad.sum().backward()


def test_without_gradients_the_loss_is_the_same_and_no_gradient_is_kept():
    hidden, labels, head, _ = _inputs(seed=2)
    with torch.no_grad():
        got = head_sequence_loss(hidden, labels, head, chunk_elements=VOCAB)
    torch.testing.assert_close(got, per_sequence_loss(head(hidden), labels), atol=1e-6, rtol=1e-6)
    assert not got.requires_grad


def test_a_trainable_output_layer_goes_through_autograd_and_gets_its_gradient():
    hidden, labels, head, weights = _inputs(seed=3)
    head.requires_grad_(True)
    (head_sequence_loss(hidden, labels, head, chunk_elements=VOCAB) * weights).sum().backward()
    assert head.weight.grad is not None and head.weight.grad.abs().sum() > 0


def _count_chunked(monkeypatch) -> list[int]:
    """Calls of the chunked loss from here on: a test comparing it with autograd must not compare autograd twice."""
    calls: list[int] = []
    apply = objective._FrozenHeadLoss.apply
    monkeypatch.setattr(objective._FrozenHeadLoss, "apply", lambda *a: calls.append(1) or apply(*a))
    return calls


def test_per_example_gradients_through_one_position_chunks_match_the_per_example_loop(monkeypatch, device):
    """Opacus's per-sample LoRA gradients with the loss one position at a time equal the float32 loop's (the
    tolerance of the fast path's own test: atol 1e-6, rtol 1e-4)."""
    monkeypatch.setattr(objective, "CHUNK_ELEMENTS", VOCAB)
    monkeypatch.setattr(objective, "AUTOGRAD_MAX_ELEMENTS", 0)  # tiny batches chunk too
    model = _model(device=device)
    examples = indexed(_examples(LENGTHS, seed=5))
    expected = _loop_gradients(model, examples)
    calls = _count_chunked(monkeypatch)
    samples, private = _dp_grad_samples(model, examples, TrainForward(model, device))
    assert calls
    for name, gs in samples.items():
        for i in range(len(examples)):
            torch.testing.assert_close(gs[i], expected[i][name], atol=1e-6, rtol=1e-4)
    private.detach()


def _ghost_update(model, device, batch) -> dict[str, torch.Tensor]:
    params = trainable_parameters(model)
    forward = TrainForward(model, device)
    private = make_private(
        model,
        torch.optim.SGD(params.values(), lr=1.0),
        noise_multiplier=0.0,
        max_grad_norm=1e-3,  # every example clipped: the update depends on each one's norm
        expected_batch_size=len(LENGTHS),
        mode="ghost",
        noise_generator=_generator(model, 0),
        loss=HeadLoss(forward.head),
    )
    before = {n: p.detach().clone() for n, p in params.items()}
    private.criterion(forward.hidden(batch), batch["labels"].to(device)).backward()  # two backward passes
    private.optimizer.step()
    update = {n: before[n] - p.detach() for n, p in params.items()}
    private.detach()
    return update


def test_ghost_clippings_two_backward_passes_give_the_same_update(monkeypatch, device):
    batch = COLLATE(indexed(_examples(LENGTHS, seed=6)))
    monkeypatch.setattr(objective, "CHUNK_ELEMENTS", 0)
    want = _ghost_update(_model(device=device), device, batch)
    monkeypatch.setattr(objective, "CHUNK_ELEMENTS", VOCAB)
    monkeypatch.setattr(objective, "AUTOGRAD_MAX_ELEMENTS", 0)
    calls = _count_chunked(monkeypatch)
    got = _ghost_update(_model(device=device), device, batch)
    assert calls
    assert any(u.abs().sum() > 0 for u in got.values())
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-7, rtol=1e-4)


def test_by_default_only_large_logits_go_in_chunks(monkeypatch):
    """The module's settings: through autograd up to AUTOGRAD_MAX_ELEMENTS logits, in chunks above (the chunked
    path computes the gradient's matmul in the forward pass, which is how it is seen here)."""
    hidden, labels, head, _ = _inputs(seed=6)
    n = int((labels[:, 1:] != -100).sum())
    calls = []
    matmul = torch.matmul
    monkeypatch.setattr(torch, "matmul", lambda *a, **k: calls.append(1) or matmul(*a, **k))
    monkeypatch.setattr(objective, "AUTOGRAD_MAX_ELEMENTS", n * VOCAB)
    head_sequence_loss(hidden.clone().requires_grad_(True), labels, head)
    assert calls == []
    monkeypatch.setattr(objective, "AUTOGRAD_MAX_ELEMENTS", n * VOCAB - 1)
    head_sequence_loss(hidden.clone().requires_grad_(True), labels, head)
    assert calls
