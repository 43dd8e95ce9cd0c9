"""Mixed precision for training: bfloat16 autocast for the frozen model's matmuls, float32 for everything DP.

Under ``train.precision=bfloat16`` the forward pass runs inside ``torch.autocast(dtype=torch.bfloat16)`` (and the
backward pass replays the same casts), which halves the memory traffic of the frozen base weights and uses the CPU's
native bf16 dot products where it has them (``avx512_bf16``, AMX). What must not lose precision stays float32:

- the LoRA weights and the optimizer state (peft keeps adapter weights float32; autocast only casts copies);
- the per-sample gradients: Opacus's grad samplers cast the layer input to the dtype of the output gradient, which is
  bfloat16 under autocast, so every per-sample gradient, its norm, the clipping and the accumulated sum would be
  bfloat16. :func:`float32_grad_samplers` wraps Opacus's own samplers so that their inputs are cast to float32 first
  (exact: a bf16 value is representable in float32) and the products accumulate in float32;
- the noise, which Opacus draws in the dtype of the summed gradient (then float32);
- the loss: logits are cast to float32 before the softmax (:mod:`dpsynth.train.objective`).

``auto`` picks bfloat16 only where it is native: a CPU without bf16 instructions emulates it, which is slower than
float32 (measured: ``bench/bench_train.py``). On CUDA, ``model.dtype=auto`` already loads the model in bfloat16.

Where training runs under bf16 autocast, the frozen base weights are loaded in bfloat16 too
(:func:`training_model_config`, ``model.dtype=auto``): autocast would cast each of them to bf16 at every matmul anyway,
so the matmuls see the same values, without a cast per call, with half the weights' memory and a bf16 residual stream
between blocks (what CUDA has done all along). On a 2-core AMD EPYC with AVX-512 bf16 a step took 0.85-0.95x the
time (``bench/bench_train.py``, ``dp_fast`` against ``dp_fast_f32w``;
``bench/results/train-2026-12-04-allocator.json``). The evaluation's privacy attacks score in the same arithmetic
(:func:`dpsynth.evaluate.model_privacy.scoring_setup`, ``evaluate.precision``); generation, the adapter merge and the
audit load the model in ``model.dtype`` as before.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any, Literal

import torch

from dpsynth.config import ModelConfig
from dpsynth.machine import BF16_FLAGS, cpu_flags

log = logging.getLogger(__name__)

Precision = Literal["auto", "float32", "bfloat16"]


@functools.cache
def cpu_has_native_bf16(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """True when the CPU flags include ``avx512_bf16`` or ``amx_bf16`` (Linux; elsewhere False: stay in float32)."""
    return bool(cpu_flags(cpuinfo) & set(BF16_FLAGS))


def resolve_precision(precision: Precision, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for ``precision`` on ``device``, or None for plain float32.

    >>> resolve_precision("float32", torch.device("cpu")) is None
    True
    >>> resolve_precision("bfloat16", torch.device("cpu"))
    torch.bfloat16
    """
    if precision == "float32":
        return None
    if precision == "bfloat16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else None
    return torch.bfloat16 if device.type == "cpu" and cpu_has_native_bf16() else None


def training_model_config(model: ModelConfig, precision: Precision, device: torch.device) -> ModelConfig:
    """The model settings training loads: ``model.dtype=auto`` on a CPU that trains under bf16 autocast loads the
    frozen base weights in bfloat16 (the matmuls see the same weights: autocast rounds float32 weights to bf16 at each
    call; the embeddings, norms and residual stream between blocks become bf16 too, as on CUDA); any explicit
    ``model.dtype``, and every other case, is kept.

    >>> training_model_config(ModelConfig(), "float32", torch.device("cpu")).dtype
    'auto'
    >>> training_model_config(ModelConfig(), "bfloat16", torch.device("cpu")).dtype
    'bfloat16'
    >>> training_model_config(ModelConfig(dtype="float32"), "bfloat16", torch.device("cpu")).dtype
    'float32'
    """
    if model.dtype == "auto" and device.type == "cpu" and resolve_precision(precision, device) == torch.bfloat16:
        return model.model_copy(update={"dtype": "bfloat16"})
    return model


def arithmetic(weights: torch.dtype, autocast_dtype: torch.dtype | None) -> dict[str, str | None]:
    """What a training's matmuls ran in, for ``privacy.json`` and checkpoints: the frozen weights' dtype and the
    autocast dtype (None: none). ``auto`` settings resolve by processor, so the same config can train in other
    arithmetic on another machine (or another dpsynth version); the record says which ran.

    >>> arithmetic(torch.bfloat16, torch.bfloat16)
    {'weights': 'bfloat16', 'autocast': 'bfloat16'}
    """
    return {
        "weights": str(weights).removeprefix("torch."),
        "autocast": None if autocast_dtype is None else str(autocast_dtype).removeprefix("torch."),
    }


def resumed_arithmetic(
    made: list[dict[str, Any]] | None, now: dict[str, str | None], where: str, step: int
) -> list[dict[str, Any]]:
    """The stretches of steps and the arithmetic each ran in, ``[{weights, autocast, from_step}, ...]``, after a
    resume at ``step`` from a checkpoint that recorded ``made``; warns when the steps to come run in other arithmetic
    than the last stretch (a processor without native bf16 resolves ``auto`` to float32, say). The privacy
    accounting is unaffected (noise, clipping and the accountant do not depend on it); the trained weights are a mix.
    A checkpoint of an earlier dpsynth recorded none: its steps count as ``unknown``.

    >>> bf16, f32 = arithmetic(torch.bfloat16, torch.bfloat16), arithmetic(torch.float32, None)
    >>> [s["from_step"] for s in resumed_arithmetic([{**bf16, "from_step": 0}], f32, "ckpt", 4)]
    [0, 4]
    >>> resumed_arithmetic([{**f32, "from_step": 0}], f32, "ckpt", 4) == [{**f32, "from_step": 0}]
    True
    """
    if step == 0:  # the step-0 checkpoint: no gradient ran yet
        return [{**now, "from_step": 0}]
    if not made:
        return [{"weights": "unknown", "autocast": "unknown", "from_step": 0}, {**now, "from_step": step}]
    last = {k: made[-1].get(k) for k in ("weights", "autocast")}
    if last == now:
        return list(made)
    log.warning(
        "the checkpoint in %s ran its steps since step %s with %s weights and %s autocast; the steps from %d on run "
        "with %s weights and %s autocast (model.dtype and train.precision resolve by processor; resume on a machine "
        "like the first to keep one arithmetic). The privacy accounting is unaffected",
        where,
        made[-1].get("from_step", 0),
        last["weights"],
        last["autocast"] or "no",
        step,
        now["weights"],
        now["autocast"] or "no",
    )
    return [*made, {**now, "from_step": step}]


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast`` on ``device`` with ``dtype``, or a no-op context for float32."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


Sampler = Callable[[torch.nn.Module, list[torch.Tensor], torch.Tensor], dict[torch.nn.Parameter, torch.Tensor]]


def _float32_inputs(fn: Sampler) -> Sampler:
    @functools.wraps(fn)
    def wrapped(
        layer: torch.nn.Module, activations: list[torch.Tensor], backprops: torch.Tensor
    ) -> dict[torch.nn.Parameter, torch.Tensor]:
        acts = [a.float() if torch.is_floating_point(a) else a for a in activations]
        out = fn(layer, acts, backprops.float())
        return {p: g.float() for p, g in out.items()}

    return wrapped


def float32_grad_samplers(hooks: Any) -> None:
    """Make an Opacus grad-sample module compute per-sample gradients (and ghost norms) in float32.

    The samplers are Opacus's own, unchanged; only their inputs are upcast. The dicts are set on the instance, so the
    class-level registries (shared by every Opacus user in the process) are left alone. For float32 inputs ``float()``
    returns the same tensor: nothing changes in a float32 run.
    """
    for attr in ("GRAD_SAMPLERS", "NORM_SAMPLERS"):
        registry = getattr(hooks, attr, None)
        if registry:
            setattr(hooks, attr, {k: _float32_inputs(v) for k, v in registry.items()})
