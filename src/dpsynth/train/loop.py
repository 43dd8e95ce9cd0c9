"""One training loop for both arms: the DP arm (Opacus DP-SGD, Poisson sampling) and the non-DP baseline.

The two arms share the model, the adapter's rank and blocks, the examples, the loss and the epochs (the non-DP arm may
take them in smaller batches and train more modules, ``train.no_dp_*``: DP's large batches would leave it few steps,
and its noise grows with the parameters, which the baseline's does not); the DP arm adds
per-sample clipping and noise, samples batches by Poisson sampling with the rate from the data set's size, and charges
every step to the accountant of its :class:`~dpsynth.train.plan.PrivacyPlan`. The control-code histogram that
generation samples from is released here too (with the Gaussian mechanism in the DP arm, exactly in the baseline),
because this is the one stage that reads the training split.

After training: the adapter is saved atomically and verified (weights moved; the reloaded adapter reproduces the
trained model and generates), then ``privacy.json`` is written from the accountant that ran.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from opacus.distributed import DifferentiallyPrivateDistributedDataParallel
from opacus.utils.batch_memory_manager import BatchMemoryManager
from tqdm.auto import tqdm

from dpsynth.config import Config
from dpsynth.errors import DPSynthError
from dpsynth.models.loader import load_model, load_tokenizer, resolve_device, resolve_dtype
from dpsynth.rundir import Arm, RunDir, atomic_path, write_jsonl
from dpsynth.train import distributed, warm_start
from dpsynth.train.batching import (
    Collator,
    ExampleDataset,
    by_length,
    check_poisson,
    fixed_batches,
    indexed,
    physical_chunks,
    poisson_loader,
    total_steps,
)
from dpsynth.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from dpsynth.train.forward import TrainForward, attach_prefix_cache
from dpsynth.train.lora import add_lora, load_init_adapter, snapshot, trainable_parameters
from dpsynth.train.objective import HeadLoss
from dpsynth.train.plan import PrivacyPlan
from dpsynth.train.precision import arithmetic, resolve_precision, resumed_arithmetic, training_model_config
from dpsynth.train.private import PrivateTraining, make_private
from dpsynth.train.verify import check_adapter_roundtrip, check_weights_changed

log = logging.getLogger(__name__)

StepCallback = Callable[[dict[str, Any]], None]
"""``on_step(row)``: a finished step's row of ``train_log.jsonl`` (step, batch_size, loss, epsilon where computed)."""


@dataclass
class LoopState:
    """What changes as training runs; saved in checkpoints."""

    step: int = 0
    losses: list[float] = field(default_factory=list)
    log_rows: list[dict[str, Any]] = field(default_factory=list)


def _generator(device: torch.device, seed: int | None) -> torch.Generator:
    """A generator seeded from ``seed``, or from fresh OS entropy when ``seed`` is None (the default for DP noise)."""
    g = torch.Generator(device=device)
    g.manual_seed(seed if seed is not None else secrets.randbits(63))
    return g


def _make_optimizer(cfg: Config, model: torch.nn.Module, arm: str) -> torch.optim.Optimizer:
    params = list(trainable_parameters(model).values())
    lr = cfg.train.arm_learning_rate(arm)
    if cfg.train.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, weight_decay=cfg.train.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.train.weight_decay)


@dataclass
class TrainingSetup:
    """The objects of one arm's run, built before the first step (or restored from a checkpoint)."""

    cfg: Config
    run: RunDir
    arm: Arm
    examples: list[Any]
    plan: PrivacyPlan | None
    steps: int
    meta: dict[str, Any]
    progress: bool = True
    on_step: StepCallback | None = None


class ArmTrainer:
    """Trains one arm. ``run()`` returns a summary; the caller writes ``privacy.json``."""

    def __init__(self, setup: TrainingSetup, *, resume: bool) -> None:
        self.s = setup
        cfg = setup.cfg
        self.dist = distributed.current()
        self.device = self.dist.device(resolve_device(cfg.model.device))
        self.tokenizer = load_tokenizer(cfg.model)
        # bf16 base weights where training runs under bf16 autocast (dpsynth.train.precision)
        self.model_cfg = training_model_config(cfg.model, cfg.train.precision, self.device)
        base = load_model(self.model_cfg, device=self.device)
        autocast_dtype = resolve_precision(cfg.train.precision, self.device)
        self.arithmetic = arithmetic(resolve_dtype(self.model_cfg.dtype, self.device), autocast_dtype)
        self.stretches: list[dict[str, Any]] = [{**self.arithmetic, "from_step": 0}]  # a resume may add one
        self.model = add_lora(base, cfg.train.arm_lora(setup.arm), seed=cfg.train.seed)
        # a public warm start (train.init_adapter); a resume then restores the checkpoint's weights over it
        self.init_digest = (
            load_init_adapter(self.model, cfg.train.init_adapter) if cfg.train.init_adapter is not None else None
        )
        self.merged = warm_start.merged_stamp(cfg)  # a warm start inside model.name's weights, read once per arm
        self.model.to(self.device)
        if self.dist.enabled:  # Opacus's DPDDP makes every rank start from rank 0's weights (a broadcast)
            DifferentiallyPrivateDistributedDataParallel(self.model)
        self.initial = snapshot(self.model)
        self.optimizer = _make_optimizer(cfg, self.model, setup.arm)
        self.dataset = ExampleDataset(indexed(setup.examples))  # indexed: batches carry positions for the cache
        self.collate = Collator(pad_id=int(self.tokenizer.pad_token_id))
        self.forward = TrainForward(self.model, self.device, autocast_dtype)
        self.ckpt_dir = setup.run.checkpoints(setup.arm)
        self.state = LoopState()
        torch.manual_seed(cfg.train.seed)  # dropout; a resume restores the state saved in the checkpoint instead
        ckpt = load_checkpoint(self.ckpt_dir) if resume else None
        seed = cfg.train.noise_seed
        # every rank draws the same global Poisson batches (dpsynth.train.distributed): one seed, rank 0's
        self.sampler_gen = _generator(torch.device("cpu"), self.dist.shared_seed(seed) if self.dist.enabled else seed)
        self.noise_gen = _generator(self.device, None if seed is None else seed + 1)
        if ckpt is not None:
            self._restore(ckpt)
        elif resume and self.dist.is_main:  # one notice, not one per rank
            log.warning("--resume: no checkpoint in %s, starting from step 0", self.ckpt_dir)
        self.private: PrivateTraining | None = None
        self._step_start = time.perf_counter()

    # -- checkpoints -------------------------------------------------------------------------------------------------

    def _restore(self, ckpt: Checkpoint) -> None:
        if ckpt.meta.get("plan") != (self.s.plan.to_json() if self.s.plan else None) or ckpt.meta.get("steps") != (
            self.s.steps
        ):
            raise DPSynthError(
                f"the checkpoint in {self.ckpt_dir} was made with a different plan (privacy or steps); "
                "resume with the same configuration, or start a new run directory"
            )
        for key, have, what in (  # None on both sides without one (and in checkpoints made before the key)
            ("init_adapter", self.init_digest, "train.init_adapter"),
            ("merged_warm_start", (self.merged or {}).get("adapter_digest"), "merged into model.name"),
        ):
            if ckpt.meta.get(key) != have:
                raise DPSynthError(
                    f"the checkpoint in {self.ckpt_dir} started from another warm start ({what}, digest "
                    f"{ckpt.meta.get(key)}); resume with that adapter, or start a new run directory"
                )
        if ckpt.meta.get("prompt_format") not in (None, self.s.meta.get("prompt_format")):  # None: made before the key
            raise DPSynthError(
                f"the checkpoint in {self.ckpt_dir} was trained in another prompt format (dpsynth.train.prompt_format: "
                "the chat template or prompt wording changed since); start a new run directory"
            )
        params = trainable_parameters(self.model)
        with torch.no_grad():
            for name, value in ckpt.trainable.items():
                params[name].copy_(value.to(self.device))
        self.optimizer.load_state_dict(ckpt.optimizer)
        self._restore_random_state(ckpt)
        self.stretches = resumed_arithmetic(ckpt.meta.get("arithmetic"), self.arithmetic, str(self.ckpt_dir), ckpt.step)
        self.state.step = ckpt.step
        self.state.log_rows = list(ckpt.meta.get("log", []))
        self.s.meta.update({k: v for k, v in ckpt.meta.items() if k in ("histogram",)})
        log.info("resumed %s at step %d of %d", self.s.arm, ckpt.step, self.s.steps)

    def _restore_random_state(self, ckpt: Checkpoint) -> None:
        """The noise and sampling generators, and torch's own (dropout) on the CPU and, on CUDA, on the device: on
        CUDA dropout draws from the device's generator, which ``__init__``'s seeding reset, so without its saved
        state a resumed run would draw the first steps' masks again (found on an H200, 2026-12-04)."""
        made_on = ckpt.meta.get("device")  # absent in checkpoints of an earlier dpsynth: then the state itself tells
        refusal = DPSynthError(
            f"the checkpoint in {self.ckpt_dir} was made on {made_on or 'another device'} and this run is on "
            f"{self.device.type}: its random states do not carry across device types; resume on the same device "
            f"(model.device), or delete that checkpoints folder to train this arm again from the start"
        )
        if made_on is not None and made_on != self.device.type:
            raise refusal
        try:
            self.sampler_gen.set_state(ckpt.generators["sampler"])
            self.noise_gen.set_state(ckpt.generators["noise"])
        except RuntimeError as exc:  # a CPU generator's state does not fit a CUDA one, nor the reverse
            raise refusal from exc
        torch.set_rng_state(ckpt.torch_rng)
        if self.device.type == "cuda":
            if "device_rng" in ckpt.generators:
                torch.cuda.set_rng_state(ckpt.generators["device_rng"], self.device)
            else:
                log.warning(
                    "the checkpoint in %s holds no GPU random state (made by an earlier dpsynth): after this resume "
                    "dropout's masks repeat the first steps' (DP noise and sampling are unaffected)",
                    self.ckpt_dir,
                )

    def _save(self) -> None:
        save_checkpoint(
            self.ckpt_dir,
            Checkpoint(
                step=self.state.step,
                trainable={n: p.detach().cpu() for n, p in trainable_parameters(self.model).items()},
                optimizer=self.optimizer.state_dict()
                if self.private is None
                else self.private.optimizer.original_optimizer.state_dict(),
                generators={
                    "sampler": self.sampler_gen.get_state(),
                    "noise": self.noise_gen.get_state(),
                    # dropout's generator on the GPU (:meth:`_restore_random_state`)
                    **({"device_rng": torch.cuda.get_rng_state(self.device)} if self.device.type == "cuda" else {}),
                },
                torch_rng=torch.get_rng_state(),
                meta={
                    "arm": self.s.arm,
                    "device": self.device.type,
                    "arithmetic": self.stretches,
                    "steps": self.s.steps,
                    "plan": self.s.plan.to_json() if self.s.plan else None,
                    "histogram": self.s.meta.get("histogram"),
                    "init_adapter": self.init_digest,
                    "merged_warm_start": (self.merged or {}).get("adapter_digest"),
                    "prompt_format": self.s.meta.get("prompt_format"),
                    "log": self.state.log_rows,
                },
            ),
        )

    # -- the loop ----------------------------------------------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        s = self.s
        remaining = s.steps - self.state.step
        self.model.train()
        shown = s.progress and self.dist.is_main
        bar = tqdm(total=s.steps, initial=self.state.step, desc=f"train {s.arm}", disable=not shown, leave=True)
        if self.state.step == 0 and self.dist.is_main:
            self._save()  # step 0: the histogram release and the generators are fixed before any gradient
        if remaining > 0:
            self._build_prefix_cache()
            self._step_start = time.perf_counter()
            if s.plan is not None:
                self._dp_steps(remaining, bar)
            else:
                self._baseline_steps(remaining, bar)
        bar.close()
        if self.private is not None:
            self.private.detach()
        self.model.eval()
        stretches = {"stretches": self.stretches} if len(self.stretches) > 1 else {}
        return {"steps": self.state.step, "log": self.state.log_rows, "arithmetic": {**self.arithmetic, **stretches}}

    def _build_prefix_cache(self) -> None:
        """With LoRA on the top K blocks only, compute the frozen blocks' output once (dpsynth.train.prefix)."""
        attach_prefix_cache(
            self.forward,
            self.s.cfg,
            top_k=self.s.cfg.train.arm_lora(self.s.arm).top_k_layers,
            examples=self.dataset.examples,
            collate=self.collate,
            spill_dir=self.s.run.arm(self.s.arm),
        )

    def _after_step(self, losses: list[float], batch_size: int, bar: Any) -> None:
        s = self.s
        self.state.step += 1
        # the global batch's size and mean loss (this rank's share alone in a distributed run)
        loss_sum, count, batch = self.dist.sum([sum(losses), len(losses), batch_size])
        mean_loss = loss_sum / count if count else float("nan")
        now = time.perf_counter()
        # wall time of the step on this rank (rank 0's in the log): what bench/bench_distributed.py compares
        row: dict[str, Any] = {"step": self.state.step, "batch_size": int(batch)}
        row["seconds"] = round(now - self._step_start, 3)
        self._step_start = now
        if count:
            row["loss"] = mean_loss
        # The accountant's epsilon so far, shown and logged at five points, the last step among them: one PRV call
        # takes ~0.3 s on a CPU core, and the 22 calls of every (steps // 20)-th step were 5% of the demo's DP arm
        # (bench/results/demo-2026-12-05/).
        every = max(1, -(-s.steps // 5))
        postfix: dict[str, str] = {"loss": f"{mean_loss:.3f}"} if count else {}
        if s.plan is not None and (self.state.step % every == 0 or self.state.step == s.steps):
            eps = s.plan.epsilon(self.state.step)
            row["epsilon"] = eps
            postfix["eps"] = f"{eps:.2f}"
        self.state.log_rows.append(row)
        if s.on_step is not None and self.dist.is_main:
            s.on_step(row)
        bar.set_postfix(postfix, refresh=False)
        bar.update(1)
        if self.state.step % s.cfg.train.checkpoint_every == 0 and self.state.step < s.steps and self.dist.is_main:
            self._save()

    def _dp_steps(self, remaining: int, bar: Any) -> None:
        s, plan = self.s, self.s.plan
        assert plan is not None
        self.private = make_private(
            self.model,
            self.optimizer,
            noise_multiplier=plan.noise_multiplier,
            max_grad_norm=plan.max_grad_norm,
            # this rank's share of the expected batch: the all-reduce averages the ranks' (sum / (B / N))
            expected_batch_size=max(1, round(plan.sample_rate * plan.n)) / self.dist.world_size,
            mode=s.cfg.train.clipping_mode,
            noise_generator=self.noise_gen,
            loss=HeadLoss(self.forward.head),
            distributed=self.dist.enabled,
        )
        loader = poisson_loader(
            self.dataset,
            q=plan.sample_rate,
            steps=remaining,
            generator=self.sampler_gen,
            collate=self.collate,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )
        check_poisson(loader, q=plan.sample_rate, n=plan.n)
        private = self.private
        losses: list[float] = []
        logical = 0
        with BatchMemoryManager(
            data_loader=loader, max_physical_batch_size=s.cfg.train.physical_batch_size, optimizer=private.optimizer
        ) as physical_loader:
            for batch in physical_loader:
                before = private.noisy_steps
                if batch["input_ids"].shape[0] == 0:
                    private.prepare_empty_batch()
                else:
                    if private.mode == "ghost":  # the criterion runs the two backward passes of ghost clipping
                        hidden = self.forward.hidden(batch)
                        with self.forward.context():
                            loss = private.criterion(hidden, batch["labels"].to(self.device))
                        loss.backward()
                        with torch.no_grad():
                            per_seq = self.forward.losses(batch, hidden.detach())
                    else:
                        per_seq = self.forward.losses(batch)
                        per_seq.mean().backward()  # Opacus's loss_reduction="mean"
                    losses.extend(per_seq.detach().tolist())
                    logical += batch["input_ids"].shape[0]
                private.optimizer.step()
                private.optimizer.zero_grad()
                if private.noisy_steps > before:  # a logical batch ended with a noisy update
                    self._after_step(losses, logical, bar)
                    losses, logical = [], 0

    def _baseline_steps(self, remaining: int, bar: Any) -> None:
        s = self.s
        batch_size = min(s.cfg.train.arm_batch_size("no_dp"), len(self.dataset))
        batches: Iterable[list[int]] = fixed_batches(
            len(self.dataset), batch_size, seed=s.cfg.train.seed, start_step=self.state.step
        )
        for _, indices in zip(range(remaining), batches, strict=False):
            self.optimizer.zero_grad()
            losses: list[float] = []
            mine = by_length(indices, self.dataset)[self.dist.rank :: self.dist.world_size]  # all of it in one process
            for chunk in physical_chunks(mine, s.cfg.train.physical_batch_size):
                per_seq = self.forward.losses(self.collate([self.dataset[i] for i in chunk]))
                (per_seq.sum() / len(indices)).backward()
                losses.extend(per_seq.detach().tolist())
            if self.dist.enabled:
                distributed.all_reduce_sum_grads(list(trainable_parameters(self.model).values()))
            self.optimizer.step()
            self._after_step(losses, len(mine), bar)  # summed over ranks there

    # -- after training ----------------------------------------------------------------------------------------------

    def save_and_verify(self, probe_ids: list[int]) -> dict[str, Any]:
        """Save the adapter atomically, then check that it learned, reloads, reproduces and generates."""
        checks: dict[str, Any] = {"weights_changed": check_weights_changed(self.initial, self.model)}
        adapter_dir = self.s.run.adapter(self.s.arm)
        with atomic_path(adapter_dir) as tmp:
            self.model.save_pretrained(str(tmp))
        checks["roundtrip"] = check_adapter_roundtrip(
            self.model,
            adapter_dir,
            lambda: load_model(self.model_cfg, device=self.device),
            probe_ids,
            eos_token_id=self.tokenizer.eos_token_id,
        )
        write_jsonl(self.s.run.train_log(self.s.arm), self.state.log_rows)
        return checks


def planned_steps(cfg: Config, n: int, arm: str) -> int:
    """The number of logical steps ``arm`` takes: the same epochs for both arms, in batches of its own size."""
    return total_steps(
        n=n, expected_batch_size=cfg.train.arm_batch_size(arm), epochs=cfg.train.epochs, max_steps=cfg.train.max_steps
    )
