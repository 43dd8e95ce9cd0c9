"""Frozen-prefix cache: with LoRA on the top K blocks only, the blocks below run once per example, not once per step.

With ``train.lora.top_k_layers=K`` no trainable weight lies in the embeddings or the first ``L - K`` transformer blocks,
so the hidden state entering block ``L - K`` is a fixed function of the example and the public, frozen base model.
:class:`PrefixCache` computes it once for every training example (in memory, or in a memory-mapped file past
``train.prefix_cache_memory_mb``); each step then runs only the top K blocks, the final norm and the output layer.
That cuts the forward and backward work by about ``(L - K) / L``.

The top blocks are run by the model's own ``forward`` with the cached states as ``inputs_embeds`` and the top blocks
swapped in as its layer list (:func:`top_blocks`), so the attention mask, the per-row position ids and the rotary
embeddings are computed by the same code as in the full model. :meth:`PrefixCache.build` checks this on the first
example (the loss with and without the cache must agree) and refuses a model where they differ (a model that
rescales ``inputs_embeds``, for instance), and it refuses bottom blocks with dropout (their output would then not be
a fixed function of the example).

Privacy: nothing changes in the analysis. The cache holds, for each example, a deterministic function of that
example alone and of public weights; it is never released (it lives in the training process, in the arm's
folder, or with ``train.prefix_cache_dir`` in a folder that a sweep's rows share, beside the private data) and shapes
nothing but the computation. Sampling is still Poisson over
all examples, and the per-example gradients of the trainable weights are the ones the full model gives (a test
compares them); clipping and noise are applied to them exactly as before.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from dpsynth.errors import DPSynthError
from dpsynth.train.batching import Collator, ExampleLike
from dpsynth.train.lora import num_layers

log = logging.getLogger(__name__)


class _Stop(Exception):
    """Raised from a pre-hook to end a forward pass at the first trainable block."""


def decoder_of(model: Any) -> Any:
    """The decoder stack (``LlamaModel`` and the like: ``layers``, ``norm``) under a peft or transformers model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    decoder = base.get_decoder()
    if not isinstance(getattr(decoder, "layers", None), torch.nn.ModuleList):
        raise DPSynthError(f"{type(decoder).__name__}: no `layers` module list; the prefix cache cannot split it")
    return decoder


@contextlib.contextmanager
def top_blocks(decoder: Any, start: int) -> Iterator[None]:
    """Run ``decoder`` with only its blocks from ``start`` on (its own forward: same mask, positions, rotary).

    Decoders that pick each block's mask and rotary table by its index in ``config.layer_types`` (Gemma 3's sliding
    and full attention, for one) see that list cut at ``start`` too, so block ``start + i`` keeps its own type."""
    full = decoder.layers
    config: Any = getattr(decoder, "config", None)
    types: Any = getattr(config, "layer_types", None)
    cut_types = isinstance(types, list) and len(types) == len(full)
    try:
        decoder.layers = torch.nn.ModuleList(list(full)[start:])
        if cut_types:
            config.layer_types = types[start:]
        yield
    finally:
        decoder.layers = full
        if cut_types:
            config.layer_types = types


def check_frozen_below(model: torch.nn.Module, start: int) -> None:
    """Refuse a cache when anything below block ``start`` trains or is random (dropout), or attention drops out."""
    decoder = decoder_of(model)
    below = [decoder.get_input_embeddings(), *list(decoder.layers)[:start]]
    trainable = [n for m in below for n, p in m.named_parameters() if p.requires_grad]
    if trainable:
        raise DPSynthError(f"prefix cache: parameters below block {start} train ({trainable[:3]}...)")
    dropout = [type(m).__name__ for b in below for m in b.modules() if isinstance(m, torch.nn.Dropout) and m.p > 0]
    if dropout or float(getattr(decoder.config, "attention_dropout", 0.0) or 0.0) > 0:
        raise DPSynthError("prefix cache: the frozen blocks use dropout, so their output is not fixed per example")


class PrefixCache:
    """Each example's hidden state at the input of block ``start``, unpadded, stored back to back."""

    def __init__(self, storage: torch.Tensor, offsets: list[int], lengths: list[int], start: int) -> None:
        self.storage = storage
        self.offsets = offsets
        self.lengths = lengths
        self.start = start

    @property
    def nbytes(self) -> int:
        return self.storage.numel() * self.storage.element_size()

    def gather(self, indices: Sequence[int], t: int, device: torch.device) -> torch.Tensor:
        """A right-padded ``[len(indices), t, hidden]`` batch (zeros past each row's length: masked, like padding)."""
        out = torch.zeros((len(indices), t, self.storage.shape[1]), dtype=self.storage.dtype)
        for row, i in enumerate(indices):
            n = self.lengths[i]
            out[row, :n] = self.storage[self.offsets[i] : self.offsets[i] + n]
        return out.to(device)

    @classmethod
    @torch.no_grad()
    def build(
        cls,
        model: torch.nn.Module,
        examples: Sequence[ExampleLike],
        *,
        start: int,
        collate: Collator,
        batch_size: int,
        device: torch.device,
        context: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
        memory_mb: float = 2048,
        spill_dir: Path | None = None,
    ) -> PrefixCache:
        """Run the embeddings and blocks ``[0, start)`` once over ``examples`` (in ``context``, e.g. autocast).

        ``storage`` is an in-memory tensor, or past ``memory_mb`` a tensor mapped from a file in ``spill_dir``.
        """
        if not 0 < start < (num_layers(decoder_of(model)) or 0):
            raise DPSynthError(f"prefix cache: block {start} is not inside the model")
        check_frozen_below(model, start)
        decoder = decoder_of(model)
        lengths = [len(e.input_ids) for e in examples]
        offsets = [0, *torch.tensor(lengths).cumsum(0).tolist()[:-1]] if lengths else []
        hidden_size = int(decoder.config.hidden_size)
        order = sorted(range(len(examples)), key=lengths.__getitem__)
        storage: torch.Tensor | None = None
        for k in range(0, len(order), batch_size):
            chunk = order[k : k + batch_size]
            batch = collate([examples[i] for i in chunk])
            with context():
                hidden = bottom_hidden(decoder, start, batch, device).detach()
            if storage is None:
                storage = _allocate(sum(lengths), hidden_size, hidden.dtype, memory_mb, spill_dir)
            for row, i in enumerate(chunk):
                storage[offsets[i] : offsets[i] + lengths[i]] = hidden[row, : lengths[i]].to("cpu")
        if storage is None:
            raise DPSynthError("prefix cache: no examples")
        cache = cls(storage, offsets, lengths, start)
        _self_check(model, cache, examples, order[-1], collate, device, context)
        return cache

    def save(self, path: Path) -> None:
        """Write the cache to ``path`` (atomically: a reader never sees half a file)."""
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # two writers (ranks, rows) never share a tmp
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {"storage": self.storage, "offsets": self.offsets, "lengths": self.lengths, "start": self.start}
        torch.save(state, tmp)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> PrefixCache:
        """A saved cache, memory-mapped (its states are read from the file as batches need them)."""
        obj = torch.load(path, mmap=True, weights_only=True)
        return cls(obj["storage"], list(obj["offsets"]), list(obj["lengths"]), int(obj["start"]))

    @classmethod
    def shared(
        cls, store: Path, key: str, build: Callable[[], PrefixCache | None], check: Callable[[PrefixCache], None]
    ) -> PrefixCache | None:
        """The cache saved under ``store`` for ``key`` (checked on one example, like a new one), else ``build()``
        and save it (none when ``build`` finds the cache does not fit the model): the rows of a sweep train on the
        same examples and model, so they compute the frozen blocks once between them (:func:`cache_key`)."""
        path = store / f"prefix-{key}.pt"
        if path.is_file():
            cache = cls.load(path)
            check(cache)
            log.info("prefix cache: reused %s", path)
            return cache
        built = build()
        if built is not None:
            built.save(path)
        return built


_BETWEEN_ARMS: dict[str, PrefixCache] | None = None


@contextlib.contextmanager
def kept_between_arms() -> Iterator[None]:
    """Within this block, a cache built for one arm is kept in memory and reused by the next arm with the same
    :func:`cache_key`: ``dpsynth train`` trains the DP arm and the non-DP baseline over the same examples and base
    model, so the frozen blocks run once for both (the build is about 20 s of the demo's DP arm). Dropped when the
    block ends.

    >>> built = []
    >>> with kept_between_arms():
    ...     first = remembered("k", lambda: built.append(1) or "cache", lambda c: None)
    ...     again = remembered("k", lambda: built.append(2) or "other", lambda c: None)
    >>> (first, again, built)
    ('cache', 'cache', [1])
    """
    global _BETWEEN_ARMS
    outer, _BETWEEN_ARMS = _BETWEEN_ARMS, {}
    try:
        yield
    finally:
        _BETWEEN_ARMS = outer


def remembered(
    key: str, build: Callable[[], PrefixCache | None], check: Callable[[PrefixCache], None]
) -> PrefixCache | None:
    """The cache kept for ``key`` by :func:`kept_between_arms` (checked on one example, like a new one), else
    ``build()``, kept for the next arm when inside that block (only the latest key: one cache in memory at a time)."""
    if _BETWEEN_ARMS is None:
        return build()
    cache = _BETWEEN_ARMS.get(key)
    if cache is not None:
        check(cache)
        log.info("prefix cache: reused from the previous arm")
        return cache
    cache = build()
    _BETWEEN_ARMS.clear()
    if cache is not None:
        _BETWEEN_ARMS[key] = cache
    return cache


def cache_key(model: str, start: int, dtype: str, examples: Sequence[ExampleLike]) -> str:
    """What a cache is a function of: the base model, the first trained block, the compute dtype and every
    example's token ids (in order: a cache row is found by the example's position)."""
    h = hashlib.sha256(repr((model, start, dtype, len(examples))).encode())
    for e in examples:
        h.update(torch.tensor(e.input_ids, dtype=torch.int64).numpy().tobytes())
        h.update(b"|")
    return h.hexdigest()[:32]


def self_check(
    model: torch.nn.Module,
    cache: PrefixCache,
    examples: Sequence[ExampleLike],
    collate: Collator,
    device: torch.device,
    context: Callable[[], contextlib.AbstractContextManager[Any]] = contextlib.nullcontext,
) -> None:
    """Refuse ``cache`` unless the longest example's output through it equals the full model's."""
    longest = max(range(len(examples)), key=lambda i: len(examples[i].input_ids))
    _self_check(model, cache, examples, longest, collate, device, context)


def _allocate(rows: int, width: int, dtype: torch.dtype, memory_mb: float, spill_dir: Path | None) -> torch.Tensor:
    size = rows * width
    nbytes = size * torch.empty((), dtype=dtype).element_size()
    if nbytes <= memory_mb * 2**20 or spill_dir is None:
        return torch.empty((rows, width), dtype=dtype)
    spill_dir.mkdir(parents=True, exist_ok=True)
    path = spill_dir / "prefix_cache.bin"
    log.info("prefix cache: %.0f MB, memory-mapped from %s", nbytes / 2**20, path)
    storage = torch.from_file(str(path), shared=True, size=size, dtype=dtype).view(rows, width)
    # The mapping keeps the data reachable; the name goes now, so the file never outlives the process.
    with contextlib.suppress(OSError):
        os.unlink(path)
    return storage


def cached_hidden(
    model: torch.nn.Module, cache: PrefixCache, batch: dict[str, torch.Tensor], device: torch.device
) -> torch.Tensor:
    """The last hidden states (after the final norm) of ``batch``, from the cache through the top blocks."""
    t = batch["input_ids"].shape[1]
    inputs = cache.gather(batch["index"].tolist(), t, device)
    return top_hidden(decoder_of(model), cache.start, inputs, batch, device)


def bottom_hidden(decoder: Any, start: int, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
    """The hidden states entering block ``start`` of ``decoder`` for a collated ``batch`` (``input_ids``,
    ``attention_mask``, ``position_ids``): the embeddings and blocks below it run, the forward stops there."""
    captured: list[torch.Tensor] = []

    def grab(_module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        captured.append(args[0] if args else kwargs["hidden_states"])
        raise _Stop

    handle = decoder.layers[start].register_forward_pre_hook(grab, with_kwargs=True)
    try:
        with contextlib.suppress(_Stop):
            decoder(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                position_ids=batch["position_ids"].to(device),
                use_cache=False,
            )
    finally:
        handle.remove()
    return captured[0]


def top_hidden(
    decoder: Any, start: int, hidden: torch.Tensor, batch: dict[str, torch.Tensor], device: torch.device
) -> torch.Tensor:
    """The last hidden states (after the final norm) from ``hidden`` entering block ``start``, through the blocks
    from ``start`` on: the decoder's own forward, so mask, positions and rotary embeddings are its own."""
    with top_blocks(decoder, start):
        out = decoder(
            inputs_embeds=hidden,
            attention_mask=batch["attention_mask"].to(device),
            position_ids=batch["position_ids"].to(device),
            use_cache=False,
        )
    return out.last_hidden_state


def full_hidden(model: torch.nn.Module, batch: dict[str, torch.Tensor], device: torch.device) -> torch.Tensor:
    """The last hidden states (after the final norm) of ``batch`` through every block."""
    out = decoder_of(model)(
        input_ids=batch["input_ids"].to(device),
        attention_mask=batch["attention_mask"].to(device),
        position_ids=batch["position_ids"].to(device),
        use_cache=False,
    )
    return out.last_hidden_state


def _self_check(
    model: torch.nn.Module,
    cache: PrefixCache,
    examples: Sequence[ExampleLike],
    i: int,
    collate: Collator,
    device: torch.device,
    context: Callable[[], contextlib.AbstractContextManager[Any]],
) -> None:
    """The longest example's final hidden states with and without the cache must agree (else: refuse the cache).

    Agree means within :func:`check_tolerance` of the largest value: the cache was computed in batches and the check
    runs the example alone, and under bfloat16 the matrix kernels round differently for other shapes (Intel AMX:
    0.8% of the largest value through SmolLM2's 30 blocks, for the same example alone and in a batch of 16, with no
    cache at all). A model that does not take cached states unchanged differs by the order of the values themselves.
    """
    batch = collate([examples[i]])
    batch["index"] = torch.tensor([i])
    was_training = model.training
    model.eval()  # LoRA dropout in the top blocks would make the two passes differ
    try:
        with context():
            tolerance = check_tolerance(model, device)
            full = full_hidden(model, batch, device).float()
            cached = cached_hidden(model, cache, batch, device).float()
    finally:
        model.train(was_training)
    diff = (full - cached).abs().max().item()
    scale = max(1.0, full.abs().max().item())
    if not math.isfinite(diff) or diff > tolerance * scale:
        raise DPSynthError(
            f"prefix cache: the model's output through the cache differs from the full model's (max {diff:.3g}, "
            f"allowed {tolerance * scale:.3g}); this architecture does not take cached hidden states as inputs_embeds "
            "unchanged: set train.prefix_cache=false (or train.lora.top_k_layers=null)"
        )


def check_tolerance(model: torch.nn.Module, device: torch.device) -> float:
    """The self-check's allowed difference, relative to the largest value: 1e-3, or four units of rounding of the
    compute dtype when that is coarser (the autocast dtype in force, else the weights'): 0.031 for bfloat16.

    >>> check_tolerance(torch.nn.Linear(2, 2), torch.device("cpu"))
    0.001
    >>> with torch.autocast("cpu", dtype=torch.bfloat16):
    ...     check_tolerance(torch.nn.Linear(2, 2), torch.device("cpu"))
    0.03125
    """
    if torch.is_autocast_enabled(device.type):
        dtype = torch.get_autocast_dtype(device.type)
    else:
        dtype = next(model.parameters()).dtype
    return max(1e-3, 4 * torch.finfo(dtype).eps)
