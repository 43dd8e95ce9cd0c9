"""DP-SGD wiring with Opacus: per-sample gradients, clipping, noise.

The pieces of ``PrivacyEngine.make_private`` are assembled here by hand for two reasons. First, ``make_private``
replaces the data loader and derives the sample rate from its length (see :mod:`dpsynth.train.batching`). Second,
dpsynth keeps its own accountant in :mod:`dpsynth.privacy.accounting`, which composes DP-SGD with the control-code
histogram. Everything that touches gradients is Opacus's own: ``prepare_module`` attaches the per-sample gradient hooks
(``wrap_model=False`` keeps the model a ``PeftModel``, so ``generate`` and ``save_pretrained`` work unchanged), the
optimizer class comes from ``get_optimizer_class`` and clips to ``max_grad_norm`` and adds Gaussian noise of standard
deviation ``noise_multiplier * max_grad_norm`` drawn from our generator, and ghost clipping goes through
``DPLossFastGradientClipping``.

Logical steps are counted through the optimizer's step hook, which Opacus calls only when noise was added, so the
count is exactly the number of noisy updates the accountant must charge, whatever batch splitting happened.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
from opacus.grad_sample.utils import prepare_module
from opacus.optimizers import DPOptimizer, get_optimizer_class
from opacus.utils.fast_gradient_clipping_utils import DPLossFastGradientClipping
from opacus.validators import ModuleValidator

from dpsynth.train.objective import SequenceLoss
from dpsynth.train.precision import float32_grad_samplers

ClippingMode = Literal["hooks", "ghost"]


@dataclass
class PrivateTraining:
    """The DP objects of one training run and the count of noisy steps taken."""

    hooks: Any
    optimizer: DPOptimizer
    criterion: Callable[[torch.Tensor, torch.Tensor], Any]
    mode: ClippingMode
    noisy_steps: int = 0
    _params: list[torch.nn.Parameter] = field(default_factory=list)

    def _count(self, _optimizer: DPOptimizer) -> None:
        self.noisy_steps += 1

    def prepare_empty_batch(self) -> None:
        """Make an empty (Poisson-sampled) batch a valid DP step: zero gradient, then noise as usual.

        Skipping an empty batch would be wrong: the accountant counts every step, and the noise of that step is part
        of the mechanism.
        """
        for p in self._params:
            if self.mode == "ghost":
                p.grad = torch.zeros_like(p)
            else:
                p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)  # type: ignore[attr-defined]

    def detach(self) -> None:
        """Remove the per-sample gradient hooks (before saving or generating with the model)."""
        if hasattr(self.hooks, "remove_hooks"):
            self.hooks.remove_hooks()


def make_private(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    noise_multiplier: float,
    max_grad_norm: float,
    expected_batch_size: float,
    mode: ClippingMode,
    noise_generator: torch.Generator,
    loss: SequenceLoss | None = None,
    distributed: bool = False,
) -> PrivateTraining:
    """Attach per-sample gradient computation to ``model`` and turn ``optimizer`` into a DP optimizer.

    ``loss`` is the per-sequence criterion (default: :class:`SequenceLoss` on logits; the training loop passes
    :class:`~dpsynth.train.objective.HeadLoss` on hidden states). Per-sample gradients are computed in float32 even
    under bfloat16 autocast (:func:`~dpsynth.train.precision.float32_grad_samplers`).

    ``distributed``: Opacus's distributed optimizer (one of several torchrun ranks, :mod:`dpsynth.train.distributed`):
    rank 0 alone adds the noise and the gradients are all-reduced; ``expected_batch_size`` is then this rank's share
    of the expected logical batch, ``B / world_size``.
    """
    ModuleValidator.validate(model, strict=True)  # refuses BatchNorm and other cross-example layers
    kwargs: dict[str, Any] = {"batch_first": True, "loss_reduction": "mean"}
    if mode == "ghost":
        kwargs["max_grad_norm"] = max_grad_norm
    hooks = prepare_module(model, grad_sample_mode=mode, wrap_model=False, **kwargs)
    float32_grad_samplers(hooks)
    optim_cls = get_optimizer_class(clipping="flat", distributed=distributed, grad_sample_mode=mode)
    dp_optimizer = optim_cls(
        optimizer,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=expected_batch_size,
        loss_reduction="mean",
        generator=noise_generator,
    )
    loss = loss if loss is not None else SequenceLoss()
    criterion: Callable[[torch.Tensor, torch.Tensor], Any] = loss
    if mode == "ghost":
        criterion = DPLossFastGradientClipping(hooks, dp_optimizer, loss, loss_reduction="mean")
    params = [p for group in optimizer.param_groups for p in group["params"] if p.requires_grad]
    private = PrivateTraining(hooks=hooks, optimizer=dp_optimizer, criterion=criterion, mode=mode, _params=params)
    dp_optimizer.attach_step_hook(private._count)
    return private
