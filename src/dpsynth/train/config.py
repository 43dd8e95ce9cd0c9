"""The train stage's settings: the LoRA adapter's shape and the training loop both arms share, with the keys that
shape the non-DP arm alone.

>>> TrainConfig(batch_size=256).arm_batch_size("dp")
256
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from dpsynth._base import Section
from dpsynth.rundir import ARMS

NO_DP_KEYS = ("no_dp_batch_size", "no_dp_learning_rate", "no_dp_target_modules")
"""The ``train`` keys that shape the non-DP arm only: fingerprints, resumes and audit stamps of DP work ignore them."""


class LoraSettings(Section):
    """LoRA adapter shape (peft). Alpha 16 and dropout 0.05 follow the reference setting."""

    r: int = Field(8, gt=0)
    alpha: int = Field(16, gt=0)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"])
    freeze_a: bool = Field(
        False,
        description="the DP arm trains B only and keeps every A as initialised (FFA-LoRA, Sun et al. 2024): fewer "
        "noisy coordinates under DP-SGD, and with train.init_adapter a subspace fitted to public data "
        "(dpsynth.train.lora.freeze_lora_a); the non-DP arm trains both",
    )
    top_k_layers: int | None = Field(
        8,
        gt=0,
        description="LoRA on the top K transformer blocks only (none: every block; K at least the model's blocks: "
        "all); with train.prefix_cache the frozen blocks below run once per example per run "
        "(dpsynth.train.prefix). 8 (every block until 2026-12-03), for a 2-core CPU's time budget. "
        "Every block learns more from the same steps (the 690-user demo, generator seed 1, 44 DP steps: MAUVE "
        "0.68 against 0.30) at 3.6x the training time; from half the steps (22, still 1.85x the time) not clearly "
        "better (0.36; bench/results/demo-recipe/). On the public proxy 8 has more signal per unit of DP noise "
        "(bench/results/dp-snr/electronics-topk.md), and every 5,000-record frontier uses it: with time to spare "
        "(a GPU), set none",
    )


class TrainConfig(Section):
    """The training loop, shared by the DP arm and the non-DP baseline arm."""

    arms: list[Literal["dp", "no_dp"]] = Field(default_factory=lambda: list(ARMS))
    batch_size: int = Field(32, gt=0, description="expected logical batch (DP: sample rate = batch_size / n)")
    no_dp_batch_size: int | None = Field(
        None,
        gt=0,
        description="the non-DP arm's batch (none: batch_size); DP wants few large batches, which leave a non-DP "
        "baseline a handful of steps for the same tokens (bench/frontier_amazon_cellphones_5k.yaml sets 32, the "
        "library default)",
    )
    physical_batch_size: int = Field(8, gt=0, description="largest batch held in memory at once")
    learning_rate: float = Field(
        1e-2,
        gt=0,
        description="the DP arm's AdamW learning rate (and the non-DP arm's when no_dp_learning_rate is none); 1e-2 "
        "(2e-3 until 2026-12-03): chosen on the public proxy at batch 256 (bench/results/recipe-search/, "
        "'Learning rate') and on the demo generator's seed 1 at batch 32 (bench/results/demo-recipe/)",
    )
    no_dp_learning_rate: float | None = Field(
        2e-3,
        gt=0,
        description="the non-DP arm's learning rate (none: learning_rate); 2e-3, the library's rate before DP's was "
        "raised: a rate goes with the noise and the batch, and the noiseless arm does not need DP's "
        "(bench/results/recipe-search/, 'Learning rate')",
    )
    no_dp_target_modules: list[str] | None = Field(
        None,
        min_length=1,
        description="the non-DP arm's LoRA target modules (none: lora.target_modules; same blocks, rank and alpha); "
        "a larger adapter needs no noise averaged away, and the baseline is the ceiling that DP rows are read under "
        "(bench/results/recipe-search/, 'LoRA on every linear module': on the public proxy all seven lifted the "
        "non-DP arm's MAUVE 0.43 -> 0.73; under DP they did not help)",
    )
    optimizer: Literal["adamw", "sgd"] = "adamw"
    weight_decay: float = Field(0.0, ge=0)
    epochs: float = Field(
        2.0,
        gt=0,
        description="passes over the training units (DP: expected passes under Poisson sampling); 2 (3 until "
        "2026-12-03): the demo's DP arm on the demo generator's seed 1 (bench/results/demo-recipe/); the 5,000-record "
        "frontiers set 1",
    )
    max_steps: int | None = Field(None, gt=0, description="stop after this many (logical) steps")
    clipping_mode: Literal["hooks", "ghost"] = Field(
        "hooks", description="per-sample gradient mode; hooks was faster on a 2-core CPU (bench/bench_train.py)"
    )
    lora: LoraSettings = Field(default_factory=LoraSettings)
    init_adapter: Path | None = Field(
        None,
        description="start both arms' LoRA from this adapter folder (one `dpsynth train` wrote, e.g. "
        "DIR/no_dp/adapter) instead of zero: a warm start trained on PUBLIC data only (another data set, never "
        "these private records), so it costs no privacy; same r, alpha and blocks as train.lora, on the arm's "
        "target modules or some of them (the others start fresh, B at zero: the arm starts as the adapter's model). "
        "The frontier's eps-0 row generates from it too (bench/public_warmstart_amazon.yaml)",
    )
    distributed: bool = Field(
        False,
        description="train under torchrun with nproc_per_node ranks on this machine (dpsynth train and run launch "
        "it; Opacus's distributed DP, dpsynth.train.distributed); several machines: call torchrun yourself",
    )
    nproc_per_node: int = Field(2, gt=0, description="ranks that train.distributed launches")
    precision: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="forward/backward under bfloat16 autocast (LoRA weights, per-sample gradients, clipping, noise "
        "and optimizer stay float32); auto: bfloat16 where the CPU has native bf16 (avx512_bf16/amx) or on CUDA",
    )
    prefix_cache: bool = Field(True, description="with lora.top_k_layers: compute the frozen blocks once per example")
    prefix_cache_memory_mb: int = Field(
        2048,
        ge=0,
        description="a larger prefix cache is memory-mapped from a file (unlinked at once) in the arm's folder",
    )
    prefix_cache_dir: Path | None = Field(
        None,
        description="keep the prefix cache in this folder and reuse it in any run over the same examples and model "
        "(a frontier's rows share DIR/prefix_cache); it holds the training examples' hidden states: private, "
        "keep it beside the data",
    )
    checkpoint_every: int = Field(
        1,
        gt=0,
        description="steps between checkpoints (for --resume); every step by default: a LoRA checkpoint is about "
        "half a megabyte, while a DP step of a large batch costs tens of seconds on a CPU (a 16-step frontier row "
        "never reached the old 50); on a GPU with sub-second steps, a larger value saves the synchronous writes",
    )
    seed: int = Field(0, description="LoRA initialisation and the non-DP arm's shuffling")
    noise_seed: int | None = Field(
        None, description="seed of DP noise and Poisson sampling; none (default) draws fresh OS entropy per run"
    )

    @model_validator(mode="after")
    def _no_dp_batch_as_default(self) -> TrainConfig:
        """A non-DP batch (or learning rate, or target modules) equal to the DP arm's is the default, stored as none:
        the same arm is the same setting to resumes, frontier fingerprints and audit stamps."""
        if self.no_dp_batch_size == self.batch_size:
            self.no_dp_batch_size = None
        if self.no_dp_learning_rate == self.learning_rate:
            self.no_dp_learning_rate = None
        modules = self.no_dp_target_modules
        if modules is not None:  # a set of modules: one order for fingerprints and stamps
            canonical = None if sorted(set(modules)) == sorted(set(self.lora.target_modules)) else sorted(set(modules))
            if canonical != modules:  # assigned only on change: assignment validates again
                self.no_dp_target_modules = canonical
        return self

    def arm_batch_size(self, arm: str) -> int:
        """The logical batch of ``arm``: ``no_dp_batch_size`` for the non-DP arm when set, else ``batch_size``.

        >>> TrainConfig(batch_size=256, no_dp_batch_size=32).arm_batch_size("no_dp")
        32
        >>> TrainConfig(batch_size=256, no_dp_batch_size=32).arm_batch_size("dp")
        256
        """
        if arm == "no_dp" and self.no_dp_batch_size is not None:
            return self.no_dp_batch_size
        return self.batch_size

    def arm_learning_rate(self, arm: str) -> float:
        """The learning rate of ``arm``: ``no_dp_learning_rate`` for the non-DP arm when set, else ``learning_rate``.

        >>> TrainConfig(learning_rate=1e-2, no_dp_learning_rate=2e-3).arm_learning_rate("no_dp")
        0.002
        >>> TrainConfig(learning_rate=1e-2, no_dp_learning_rate=2e-3).arm_learning_rate("dp")
        0.01
        """
        if arm == "no_dp" and self.no_dp_learning_rate is not None:
            return self.no_dp_learning_rate
        return self.learning_rate

    def arm_lora(self, arm: str) -> LoraSettings:
        """The LoRA shape of ``arm``: ``lora`` with ``no_dp_target_modules`` for the non-DP arm when set; the non-DP
        arm trains both LoRA factors (``lora.freeze_a`` answers DP noise, which it has none of).

        >>> TrainConfig(no_dp_target_modules=["q_proj", "o_proj"]).arm_lora("no_dp").target_modules
        ['o_proj', 'q_proj']
        >>> TrainConfig(no_dp_target_modules=["q_proj", "o_proj"]).arm_lora("dp").target_modules
        ['q_proj', 'v_proj']
        >>> lora = LoraSettings(freeze_a=True)
        >>> TrainConfig(lora=lora).arm_lora("dp").freeze_a, TrainConfig(lora=lora).arm_lora("no_dp").freeze_a
        (True, False)
        """
        if arm != "no_dp":
            return self.lora
        update: dict[str, Any] = {"freeze_a": False}
        if self.no_dp_target_modules is not None:
            update["target_modules"] = list(self.no_dp_target_modules)
        return self.lora.model_copy(update=update)
