"""Privacy attacks on each arm's model: membership inference (loss and reference attacks) and canary exposure.

**Membership inference.** Members are training units, non-members test units (never trained on), at most
``evaluate.mia_max_records`` of each, drawn with a seed; canaries are left out of the members (they are fake and
measured by exposure). A unit's loss is the one training minimised: the mean NLL over its labelled tokens (each
response and, after a complete response, its end-of-turn token) in the exact token sequence training built
(:func:`dpsynth.data.format.encode_unit`), each labelled run scored given everything before it. The loss attack
scores ``-loss`` under the arm's model; the reference attack ``reference loss - arm loss``, the reference being the
model as it was before any private record: the base model, or the base model with the public warm start that the
arms began from (``train.init_adapter``; :func:`dpsynth.train.warm_start.reference`).

**Exposure.** For up to ``evaluate.exposure_canaries`` canaries (seeded draw), the canary's text is scored as the
response to its training prompt with the true secret and with ``evaluate.exposure_candidates`` random ones
(:func:`dpsynth.evaluate.exposure.canary_exposures`; candidates are seeded, so both arms see the same ones). Score:
total NLL of the response tokens (as in Carlini et al.).

**Arithmetic.** The model scores as training ran (``evaluate.precision=auto``, :func:`scoring_setup`): where
training runs under bf16 autocast on bfloat16 weights (``train.precision=auto`` on a CPU with native bf16, or
CUDA), so does the scoring (MIA and canary exposure), which is then the loss training minimised, in about 0.6x the
float32 time. On the demo
(2-core AMD EPYC, 100 members and 100 non-members) the MIA took 24 s against 40 s, every attack's AUC moved by at most
0.003 (its standard error at 100 + 100 units is ~0.04) and the reference-attack scores correlated 0.9995 with the
float32 ones (``bench/results/mia-precision-2026-12-05/``). ``evaluate.precision=float32`` scores in float32.

Cost (SmolLM2-135M on 2 busy CPU cores, ~150-300 tokens/s): the MIA scores each sampled unit three times (base and
two arms), about 90 tokens each; with every adapter in the top blocks (``train.lora.top_k_layers``, the default) the
blocks below run once for all three (:mod:`dpsynth.evaluate.adapter_nll`: 1.57x faster on the demo, the same losses
within 3e-6 nats, ``bench/bench_mia.py``); exposure scores ``candidates + 1`` tails of ~7 tokens per canary and arm
after a cached prefix (:mod:`dpsynth.evaluate.prefix_nll`), so its cost is ``canaries x candidates x ~7`` tokens per
arm.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dpsynth.config import Config, ModelConfig
from dpsynth.data.canaries import Canary
from dpsynth.data.format import IGNORE_INDEX, CutRule, cut_response, encode_prompt, encode_unit
from dpsynth.data.prepare import prepared_cut_rule
from dpsynth.data.records import Record, group_by_unit
from dpsynth.errors import DPSynthError
from dpsynth.evaluate.adapter_nll import Adapter, active_adapter, adapters_response_nll, shared_bottom_start
from dpsynth.evaluate.collect import EvalInputs, MetricList, sample
from dpsynth.evaluate.exposure import canary_exposures
from dpsynth.evaluate.mia import loss_attack, reference_attack
from dpsynth.evaluate.prefix_nll import common_prefix_length, shared_prefix_nll
from dpsynth.evaluate.scoring import response_nll
from dpsynth.rundir import RunDir
from dpsynth.train import prompt_format, warm_start
from dpsynth.train.precision import autocast, resolve_precision, training_model_config

log = logging.getLogger(__name__)
TARGET_FPR = 0.01


def labelled_runs(labels: Sequence[int]) -> list[tuple[int, int]]:
    """``[start, end)`` of each maximal run of labelled (not ``IGNORE_INDEX``) positions.

    >>> labelled_runs([-100, -100, 5, 6, -100, 7])
    [(2, 4), (5, 6)]
    """
    runs: list[tuple[int, int]] = []
    start = None
    for i, v in enumerate([*labels, IGNORE_INDEX]):
        if v != IGNORE_INDEX and start is None:
            start = i
        elif v == IGNORE_INDEX and start is not None:
            runs.append((start, i))
            start = None
    return runs


class UnitScorer:
    """Per-unit training loss of a set of units, with the prefix all their sequences share computed once."""

    def __init__(self, tokenizer: Any, units: Sequence[Sequence[Record]], info: dict[str, Any], batch_tokens: int):
        self.tokenizer = tokenizer
        self.prompts: list[list[int]] = []
        self.responses: list[list[int]] = []
        self.owner: list[int] = []  # the unit each labelled run belongs to
        for u, records in enumerate(units):
            ex = encode_unit(
                tokenizer,
                records,
                system_prompt=info["system_prompt"],
                max_tokens=int(info["max_tokens"]),
                include_title=bool(info.get("include_title", False)),
                cut=prepared_cut_rule(info),
            )
            for start, end in labelled_runs(ex.labels):
                self.prompts.append(ex.input_ids[:start])
                self.responses.append(ex.input_ids[start:end])
                self.owner.append(u)
        self.n_units = len(units)
        self.batch_tokens = batch_tokens
        self.common = common_prefix_length(self.prompts)

    def losses_under(self, model: Any, adapters: Sequence[Adapter]) -> list[np.ndarray]:
        """:meth:`losses` under each of ``adapters`` of a peft model; when every adapter lives in the top blocks, the
        blocks below run once for all of them (:mod:`dpsynth.evaluate.adapter_nll`)."""
        start = shared_bottom_start(model)
        if start is not None and self.prompts:
            sums = adapters_response_nll(
                model,
                self.tokenizer,
                self.prompts,
                self.responses,
                adapters,
                start=start,
                max_batch_tokens=self.batch_tokens,
                reduction="sum",
            )
            if sums is not None:
                return [self._per_unit(s) for s in sums]
            log.warning("evaluate: the blocks below the adapters could not be shared; scoring each model whole")
        out = []
        for name in adapters:
            with active_adapter(model, name) as m:
                out.append(self.losses(m))
        return out

    def losses(self, model: Any) -> np.ndarray:
        """Mean NLL per labelled token of each unit under ``model``."""
        c = self.common
        if c > 0:
            sums = shared_prefix_nll(
                model,
                self.tokenizer,
                self.prompts[0][:c],
                [p[c:] for p in self.prompts],
                self.responses,
                max_batch_tokens=self.batch_tokens,
                reduction="sum",
            )
        else:  # pragma: no cover - every chat template starts with the same tokens
            sums = response_nll(model, self.tokenizer, self.prompts, self.responses, reduction="sum")
        return self._per_unit(sums)

    def _per_unit(self, sums: np.ndarray) -> np.ndarray:
        """Summed NLL per labelled run -> mean NLL per labelled token of each unit."""
        total = np.zeros(self.n_units)
        count = np.zeros(self.n_units)
        np.add.at(total, self.owner, sums)
        np.add.at(count, self.owner, [len(r) for r in self.responses])
        return total / count


def canary_scorer(model: Any, tokenizer: Any, prompt: list[int], max_tokens: int, batch_tokens: int) -> Callable:
    """NLL of each text as the response to ``prompt`` (tokenized and cut as training did), summed over its tokens,
    **minus the NLL of the tokens all texts of the call share** (the canary's words before the secret).

    That part is the same number for every candidate, so leaving it out changes no rank (exposure only compares the
    true secret's score with the candidates'), and it saves scoring ~40 tokens per canary and arm. Only the tails
    that differ are run, after the shared prompt and beginning (:func:`shared_prefix_nll`).
    """

    def score(texts: Sequence[str]) -> np.ndarray:
        ids = [list(x)[:max_tokens] for x in tokenizer(list(texts), add_special_tokens=False)["input_ids"]]
        c = min(common_prefix_length(ids), min(len(x) for x in ids) - 1)  # every tail keeps at least one token
        return shared_prefix_nll(
            model,
            tokenizer,
            prompt + ids[0][:c],
            [[] for _ in ids],
            [x[c:] for x in ids],
            max_batch_tokens=batch_tokens,
            reduction="sum",
        )

    return score


REFERENCE = "public_warm_start"
"""The adapter name of the arms' public warm start on the shared model (no arm is called so)."""


def scoring_setup(cfg: Config) -> tuple[ModelConfig, torch.device, torch.dtype | None]:
    """The model settings, device and autocast dtype (None: none) the LM scoring runs with: ``evaluate.precision``,
    ``auto`` meaning ``train.precision`` (bfloat16 weights under bf16 autocast where training runs so); an explicit
    ``float32`` loads float32 weights even where ``model.dtype=auto`` would mean bfloat16 (CUDA)."""
    from dpsynth.models.loader import resolve_device

    device = resolve_device(cfg.model.device)
    precision = cfg.train.precision if cfg.evaluate.precision == "auto" else cfg.evaluate.precision
    model = training_model_config(cfg.model, precision, device)
    if cfg.evaluate.precision == "float32" and model.dtype == "auto":  # asked for: not CUDA's bf16 either
        model = model.model_copy(update={"dtype": "float32"})
    return model, device, resolve_precision(precision, device)


def load_arms(
    cfg: Config,
    run: RunDir,
    arms: Sequence[str],
    reference: Path | None = None,
    model_cfg: ModelConfig | None = None,
) -> tuple[Any, Any]:
    """One base model carrying every arm's adapter under the arm's name (switched with ``set_adapter``), and the
    ``reference`` adapter (the arms' public warm start) under :data:`REFERENCE` when given; loaded with
    ``model_cfg`` (default ``cfg.model``)."""
    from peft import PeftModel

    from dpsynth.models.loader import load_model, load_tokenizer

    for arm in arms:  # in a format it never saw, the attacks would score sequences other than those it trained on
        if (why := prompt_format.stale(cfg.model, run, arm)) is not None:
            raise DPSynthError(
                f"{why}. Its membership inference and canary exposure would be measured in today's format: train "
                "the arm again in a new --out directory"
            )
    tokenizer = load_tokenizer(cfg.model)
    base = load_model(model_cfg or cfg.model)
    model = PeftModel.from_pretrained(base, run.adapter(arms[0]), adapter_name=arms[0])
    for arm in arms[1:]:
        model.load_adapter(run.adapter(arm), adapter_name=arm, is_trainable=False)
    if reference is not None:
        model.load_adapter(reference, adapter_name=REFERENCE, is_trainable=False)
    model.eval()
    return model, tokenizer


def _mia_units(inputs: EvalInputs, cap: int, seed: int) -> tuple[list[list[Record]], list[list[Record]]]:
    members = [u for unit, u in group_by_unit(inputs.train_all).items() if unit not in inputs.canary_units]
    nonmembers = list(group_by_unit(inputs.test_all).values())
    return sample(members, cap, seed, "mia-members"), sample(nonmembers, cap, seed, "mia-nonmembers")


def model_privacy(
    cfg: Config, run: RunDir, inputs: EvalInputs, metrics: MetricList, timing: dict[str, float]
) -> dict[str, Any]:
    """MIA and exposure for every arm with an adapter; returns the ``mia`` and ``exposure`` tables (each naming
    the arithmetic it was scored in, ``scoring``)."""
    arms = inputs.model_arms
    start = time.perf_counter()
    reference, reference_model = warm_start.reference(run, arms)
    from dpsynth.models.loader import resolve_dtype

    model_cfg, device, dtype = scoring_setup(cfg)
    weights = str(resolve_dtype(model_cfg.dtype, device)).removeprefix("torch.")
    scoring = f"{weights} weights, " + ("bf16 autocast" if dtype is not None else "no autocast")
    log.info("evaluate: loading the base model (%s) with the %s adapter(s) ...", scoring, ", ".join(arms))
    model, tokenizer = load_arms(cfg, run, arms, reference, model_cfg)
    timing["privacy.model_load"] = time.perf_counter() - start
    with autocast(device, dtype):
        tables = _attacks(cfg, inputs, model, tokenizer, arms, reference, reference_model, metrics, timing)
    for table in tables.values():
        if table is not None:
            table["scoring"] = scoring
    return tables


def _attacks(
    cfg: Config,
    inputs: EvalInputs,
    model: Any,
    tokenizer: Any,
    arms: Sequence[str],
    reference: Path | None,
    reference_model: str,
    metrics: MetricList,
    timing: dict[str, float],
) -> dict[str, Any]:
    """The MIA and exposure tables of :func:`model_privacy` on the loaded model."""
    e = cfg.evaluate

    start = time.perf_counter()
    members, nonmembers = _mia_units(inputs, e.mia_max_records, e.seed)
    log.info("evaluate: membership inference on %d members and %d non-members ...", len(members), len(nonmembers))
    mia: dict[str, Any] = {"columns": ["arm", "attack", "auc", "tpr_at_1pct_fpr"], "rows": []}
    if members and nonmembers:
        scorers = [UnitScorer(tokenizer, units, inputs.info, e.score_batch_tokens) for units in (members, nonmembers)]
        # one pass per scorer: the reference first, then each arm (the unadapted blocks run once for all of them)
        scores = [s.losses_under(model, [None if reference is None else REFERENCE, *arms]) for s in scorers]
        ref = [per_model[0] for per_model in scores]
        for k, arm in enumerate(arms, start=1):
            target = [per_model[k] for per_model in scores]
            attacks = {
                "loss": loss_attack(target[0], target[1], fprs=(TARGET_FPR,)),
                "reference": reference_attack(target[0], ref[0], target[1], ref[1], fprs=(TARGET_FPR,)),
            }
            for name, result in attacks.items():
                tpr = result["tpr_at_fpr"][f"{TARGET_FPR:g}"]  # type: ignore[index]
                mia["rows"].append([arm, name, result["auc"], tpr])
                extra = {"n_members": len(members), "n_nonmembers": len(nonmembers)}
                metrics.add(
                    f"privacy.mia.{name}.auc", "privacy", arm, result["auc"], "mia_auc", f"{name} attack", **extra
                )
                metrics.add(
                    f"privacy.mia.{name}.tpr_at_1pct_fpr",
                    "privacy",
                    arm,
                    tpr,
                    "mia_tpr_at_fpr",
                    f"{name} attack, target FPR 1%; resolution 1/{len(nonmembers)}",
                    **extra,
                )
        mia.update(
            n_members=len(members),
            n_nonmembers=len(nonmembers),
            fpr_resolution=1.0 / len(nonmembers),
            members="training units (canaries excluded)",
            nonmembers="test units",
            reference_model=reference_model,
        )
    else:
        mia["note"] = "not measured: no training or no test units"
    timing["privacy.mia"] = time.perf_counter() - start

    start = time.perf_counter()
    log.info(
        "evaluate: exposure of up to %d canaries, %d candidates each ...", e.exposure_canaries, e.exposure_candidates
    )
    exposure = _exposure(cfg, inputs, model, tokenizer, arms, metrics)
    timing["privacy.exposure"] = time.perf_counter() - start
    return {"mia": mia, "exposure": exposure}


def _secret_trained(tokenizer: Any, canary: Canary, max_tokens: int, cut: CutRule) -> bool:
    """Whether training saw the canary's secret: the response as cut (:func:`dpsynth.data.format.cut_response`)
    reaches past it."""
    _, kept = cut_response(tokenizer, canary.text, max_tokens, cut)
    if kept is not None:
        return kept >= len(canary.prefix) + len(canary.secret)
    return len(tokenizer(canary.prefix + canary.secret, add_special_tokens=False)["input_ids"]) <= max_tokens


def _exposure(
    cfg: Config, inputs: EvalInputs, model: Any, tokenizer: Any, arms: Sequence[str], metrics: MetricList
) -> dict[str, Any] | None:
    e = cfg.evaluate
    info = inputs.info
    max_tokens = int(info["max_tokens"])
    # A secret beyond the training cut (data.max_tokens) was never trained on: its exposure would be ~1 bit by
    # construction (every candidate ties), so such canaries are left out and counted.
    cut = prepared_cut_rule(info)
    secret_in_loss = [c for c in inputs.canaries if _secret_trained(tokenizer, c, max_tokens, cut)]
    chosen = sample(secret_in_loss, e.exposure_canaries, e.seed, "exposure")
    if not chosen:
        if not inputs.canaries:
            return None
        reason = (
            "evaluate.exposure_canaries=0"
            if e.exposure_canaries == 0
            else "every canary's secret lies beyond data.max_tokens, so none was trained on"
        )
        for arm in arms:
            for stat in ("mean", "max"):
                metrics.add(f"privacy.exposure.{stat}", "privacy", arm, None, "exposure", f"not measured: {reason}")
        return {"columns": ["arm", "mean", "max", "n_capped"], "rows": [], "note": f"not measured: {reason}"}
    prompts = {c.text: encode_prompt(tokenizer, c.codes, info["system_prompt"]) for c in chosen}
    table: dict[str, Any] = {
        "columns": ["arm", "mean", "max", "n_capped"],
        "rows": [],
        "n_canaries": len(chosen),
        "n_canaries_planted": len(inputs.canaries),
        "n_secret_cut_by_max_tokens": len(inputs.canaries) - len(secret_in_loss),
        "num_candidates": e.exposure_candidates,
        "per_canary": {},
    }
    # One scorer per canary (its own training prompt), on the shared model: whichever adapter is active scores.
    scorers = {
        text: canary_scorer(model, tokenizer, p, max_tokens, e.score_batch_tokens) for text, p in prompts.items()
    }

    def score(texts: Sequence[str]) -> np.ndarray:
        return scorers[texts[0]](texts)  # canary_exposures passes the canary with its true secret first

    for arm in arms:
        with active_adapter(model, arm):
            result = canary_exposures(
                [c.to_json() for c in chosen], score, num_candidates=e.exposure_candidates, seed=e.seed
            )
        table["rows"].append([arm, result["mean"], result["max"], result["n_capped"]])
        table["per_canary"][arm] = [
            {k: p[k] for k in ("unit", "rank", "exposure", "capped")} for p in result["per_canary"]
        ]
        table.update(cap=result["cap"], space_bits=result["space_bits"])
        q = f"over {len(chosen)} canaries, {e.exposure_candidates} candidates each, cap {result['cap']:.2f} bits"
        metrics.add("privacy.exposure.mean", "privacy", arm, result["mean"], "exposure", f"mean {q}")
        metrics.add("privacy.exposure.max", "privacy", arm, result["max"], "exposure", f"max {q}")
    return table
