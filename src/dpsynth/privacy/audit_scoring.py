"""The audit's attack and its bound: score each canary by how much training lowered its loss, guess, bound epsilon.

Score. A canary's loss is the mean negative log-likelihood (nats per token) of its response given its training prompt
(:func:`dpsynth.evaluate.scoring.response_nll`), i.e. the loss it was (or would have been) trained on. Its score is
``loss under the trained model - loss under the reference model``: lower means training pulled the canary's likelihood
up more, which is what being a member does. Subtracting the reference's loss removes how predictable a canary was to
begin with (a reference-model attack), so that the ranking reflects training and not the canary's own difficulty. The
reference is the model before the private data: the base model, or the base model with the public warm start the arms
began from (``train.init_adapter``).

Guesses and bound. With the scores sorted, the auditor guesses IN for the ``k+`` canaries whose loss dropped most and
OUT for the ``k-`` whose loss dropped least, abstains on the rest, and turns the number of correct guesses into an
epsilon lower bound with :func:`dpsynth.privacy.audit.one_run_audit` (``k+`` and ``k-`` fixed before the scores are
seen, as the analysis requires). The bound is also computed with the threshold-search estimator
(:func:`~dpsynth.privacy.audit.epsilon_lower_bound_from_canaries`, Bonferroni-corrected) and reported beside it, but
the headline number is the fixed-``k`` one: taking the larger of the two would be a search without correction.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from dpsynth.config import Config
from dpsynth.data.format import CutRule, encode_prompt
from dpsynth.data.prepare import prepared_cut_rule
from dpsynth.evaluate.mia import roc_auc
from dpsynth.evaluate.scoring import response_nll
from dpsynth.privacy.audit import epsilon_lower_bound_from_canaries, one_run_audit
from dpsynth.privacy.audit_canaries import AuditCanary, response_ids
from dpsynth.rundir import RunDir


def canary_losses(
    model: Any,
    tokenizer: Any,
    canaries: Sequence[AuditCanary],
    *,
    system_prompt: str,
    max_tokens: int,
    batch_size: int,
    cut: CutRule = "token",
) -> np.ndarray:
    """Mean NLL per response token of each canary under ``model``, with the prompt and tokens training used."""
    prompts = [encode_prompt(tokenizer, c.codes, system_prompt) for c in canaries]
    responses = [response_ids(tokenizer, c, max_tokens, cut) for c in canaries]
    return response_nll(model, tokenizer, prompts, responses, batch_size)


def score_arms(
    cfg: Config,
    audit: RunDir,
    arms: Sequence[str],
    canaries: Sequence[AuditCanary],
    info: dict[str, Any],
    *,
    progress: bool = False,
    reference: Path | None = None,
) -> dict[str, np.ndarray]:
    """Canary losses under the reference model (``"base"``) and under each arm's trained adapter (keyed by arm).

    The reference is the base model, or with ``reference`` the base model with that adapter: the arms' public warm
    start (:func:`dpsynth.train.warm_start.reference`), the model as it was before any private record or canary.
    Each model is loaded afresh (peft attaches an adapter to the model in place, so a model that carried one adapter
    is not the base model any more). ``progress``: a bar per model, in chunks of canaries (the scores do not depend on
    the chunking: each row's loss is its own); 1,000 canaries take minutes on a CPU.
    """
    from tqdm.auto import tqdm

    from dpsynth.models.adapters import attach_adapter
    from dpsynth.models.loader import load_model, load_tokenizer

    tokenizer = load_tokenizer(cfg.model)
    chunk = cfg.audit.score_batch_size * 4

    def losses(model: Any, name: str) -> np.ndarray:
        parts = []
        with tqdm(total=len(canaries), desc=f"audit: score {name}", unit="canary", disable=not progress) as bar:
            for start in range(0, len(canaries), chunk):
                part = canaries[start : start + chunk]
                parts.append(
                    canary_losses(
                        model,
                        tokenizer,
                        part,
                        system_prompt=str(info["system_prompt"]),
                        max_tokens=int(info["max_tokens"]),
                        cut=prepared_cut_rule(info),
                        batch_size=cfg.audit.score_batch_size,
                    )
                )
                bar.update(len(part))
        return np.concatenate(parts) if parts else np.zeros(0)

    base = load_model(cfg.model)
    out = {"base": losses(base if reference is None else attach_adapter(base, reference), "reference")}
    for arm in arms:
        out[arm] = losses(attach_adapter(load_model(cfg.model), audit.adapter(arm)), arm)
    return out


def membership_scores(trained: np.ndarray, base: np.ndarray) -> np.ndarray:
    """Higher = more likely a member: the base loss minus the trained loss (the negative of the audit's score).

    >>> membership_scores(np.array([1.0, 3.0]), np.array([2.0, 2.0])).tolist()
    [1.0, -1.0]
    """
    return np.asarray(base, dtype=np.float64) - np.asarray(trained, dtype=np.float64)


def arm_bound(
    scores: np.ndarray, included: np.ndarray, *, k_plus: int, k_minus: int, delta: float, significance: float
) -> dict[str, Any]:
    """The epsilon lower bound of one arm from its membership scores, and the attack's diagnostics.

    >>> inc = np.array([True, False] * 50)
    >>> r = arm_bound(inc * 1.0, inc, k_plus=20, k_minus=20, delta=1e-5, significance=0.05)
    >>> r["correct"], r["guesses"], r["eps_lb"] > 1.5, r["auc"]
    (40, 40, True, 1.0)
    """
    scores = np.asarray(scores, dtype=np.float64)
    included = np.asarray(included, dtype=bool)
    s, inc = scores.tolist(), included.tolist()
    fixed = one_run_audit(s, inc, k_plus=k_plus, k_minus=k_minus, delta=delta, significance=significance)
    result: dict[str, Any] = {
        "eps_lb": fixed.epsilon,
        "correct": fixed.num_correct,
        "guesses": fixed.num_guesses,
        "k_plus": k_plus,
        "k_minus": k_minus,
        "method": fixed.method,
    }
    members, others = scores[included], scores[~included]
    if members.size and others.size:
        search = epsilon_lower_bound_from_canaries(s, inc, delta=delta, significance=significance)
        result["threshold_search"] = {
            "eps_lb": search.epsilon,
            "correct": search.num_correct,
            "guesses": search.num_guesses,
            "method": search.method,
            "note": "secondary estimator (thresholds searched, Bonferroni-corrected); eps_lb above is the headline",
        }
        result["auc"] = roc_auc(members, others)
        result["mean_loss_drop_members"] = float(members.mean())
        result["mean_loss_drop_nonmembers"] = float(others.mean())
    return result
