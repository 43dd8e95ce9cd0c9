"""The optional slower utility check: the base LLM fine-tuned (LoRA, no DP) as a classifier, tested on real data.

The seed framework measured utility this way: the same pretrained model, fine-tuned once on real training reviews
and once on each synthetic set to predict the star rating, then tested on held-out real reviews. The TF-IDF and
embedding classifiers of :mod:`dpsynth.evaluate.utility` are cheaper and always run; this one is closer to how a
user would really use the data, and slower (one short fine-tuning per training source): ``evaluate.llm_classifier``.

How. ``AutoModelForSequenceClassification`` on the run's base model: a fresh linear head on the last non-pad token
(transformers' Llama classifier), LoRA on the configured target modules, the head fully trained (peft's ``SEQ_CLS``
task puts it in ``modules_to_save``). Plain AdamW over shuffled mini-batches, seeded; the input is the record's text
alone (its codes would give the label away). No DP: the classifier never leaves the evaluation, only its test scores
do, and the real-data source is the non-private reference, as the TF-IDF ``real`` row is.

>>> from dpsynth.evaluate.llm_classifier import LLMClassifierSettings
>>> LLMClassifierSettings(epochs=1, learning_rate=1e-3, batch_size=8, max_tokens=128, seed=0).batch_size
8
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from dpsynth.evaluate.utility import LabeledSet, classification_scores

if TYPE_CHECKING:
    from dpsynth.config import LoraSettings, ModelConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LLMClassifierSettings:
    """How each classifier is fine-tuned (from ``evaluate.llm_classifier_*`` and ``data.max_tokens``)."""

    epochs: int
    learning_rate: float
    batch_size: int
    max_tokens: int
    seed: int
    progress: bool = False


def load_classifier(model_cfg: ModelConfig, lora: LoraSettings, num_labels: int, seed: int, pad_token_id: int) -> Any:
    """The base model with a fresh ``num_labels``-way head and a fresh LoRA adapter.

    Loaded anew for each training source: peft changes the model in place, and every source must start from the
    same untouched weights (a 135M model loads in about a second; the fine-tuning is what costs).
    """
    from transformers import AutoModelForSequenceClassification

    from dpsynth.models.loader import model_source, resolve_device
    from dpsynth.train.lora import add_lora

    source, kwargs = model_source(model_cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)  # the head's initialisation
        model = AutoModelForSequenceClassification.from_pretrained(
            source, num_labels=num_labels, dtype=torch.float32, **kwargs
        )
    model.config.pad_token_id = pad_token_id  # the head reads the last non-pad token of each row
    model = add_lora(model, lora, seed=seed, task_type="SEQ_CLS")
    model.to(resolve_device(model_cfg.device))
    return model


def _encode(tok: Any, texts: Sequence[str], max_tokens: int, device: torch.device) -> dict[str, torch.Tensor]:
    enc = tok(list(texts), truncation=True, max_length=max_tokens, padding=True, return_tensors="pt")
    return {k: v.to(device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}


def fine_tune(model: Any, tok: Any, train: LabeledSet, classes: Sequence[Hashable], s: LLMClassifierSettings) -> float:
    """Train ``model`` in place on ``train``; returns the last epoch's mean loss."""
    index = {c: i for i, c in enumerate(classes)}
    y = torch.tensor([index[label] for label in train.labels], dtype=torch.long)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=s.learning_rate)
    rng = np.random.default_rng(s.seed)
    model.train()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(s.seed)  # LoRA dropout: the same scores from the same inputs, whatever ran before
        mean = _epochs(model, tok, train, y, opt, rng, s)
    model.eval()
    return mean


def _epochs(
    model: Any, tok: Any, train: LabeledSet, y: torch.Tensor, opt: Any, rng: Any, s: LLMClassifierSettings
) -> float:
    from tqdm.auto import tqdm

    device = next(model.parameters()).device
    mean = float("nan")
    steps = s.epochs * -(-len(train.texts) // s.batch_size)
    bar = tqdm(total=steps, desc="evaluate: llm classifier", disable=not s.progress)
    for epoch in range(s.epochs):
        order = rng.permutation(len(train.texts))
        losses = []
        for start in range(0, len(order), s.batch_size):
            bar.update(1)
            rows = order[start : start + s.batch_size]
            batch = _encode(tok, [train.texts[i] for i in rows], s.max_tokens, device)
            out = model(**batch, labels=y[rows].to(device))
            opt.zero_grad(set_to_none=True)
            out.loss.backward()
            opt.step()
            losses.append(float(out.loss.detach()))
        mean = float(np.mean(losses))
        bar.set_postfix(loss=f"{mean:.3f}")
        log.info("llm classifier: epoch %d/%d, mean loss %.4f", epoch + 1, s.epochs, mean)
    bar.close()
    return mean


@torch.inference_mode()
def predict(model: Any, tok: Any, texts: Sequence[str], classes: Sequence[Hashable], s: LLMClassifierSettings) -> list:
    """The most likely class of each text."""
    device = next(model.parameters()).device
    out: list = []
    for start in range(0, len(texts), s.batch_size):
        logits = model(**_encode(tok, texts[start : start + s.batch_size], s.max_tokens, device)).logits
        out.extend(classes[i] for i in logits.argmax(-1).tolist())
    return out


def llm_train_on_x_test_on_real(
    sets: dict[str, LabeledSet],
    test: LabeledSet,
    classes: Sequence[Hashable],
    model_cfg: ModelConfig,
    lora: LoraSettings,
    settings: LLMClassifierSettings,
) -> dict[str, dict[str, Any]]:
    """One fine-tuned classifier per training source, each scored on ``test``: ``{source: {accuracy, macro_f1, ...}}``.

    Every source starts from the same base weights, head and adapter initialisation (same seed), so that the scores
    differ only by the training records.
    """
    from dpsynth.models.loader import load_tokenizer

    tok = load_tokenizer(model_cfg)
    results: dict[str, dict[str, Any]] = {}
    for name, train in sets.items():
        if len(train.texts) == 0:
            results[name] = {"status": "empty", "note": "no training records", "n_train": 0}
            continue
        unknown = sorted({repr(c) for c in train.labels} - {repr(c) for c in classes})
        if unknown:
            raise ValueError(f"training source {name!r} has labels outside the task's classes: {unknown}")
        model = load_classifier(model_cfg, lora, len(classes), settings.seed, tok.pad_token_id)
        loss = fine_tune(model, tok, train, classes, settings)
        pred = predict(model, tok, list(test.texts), classes, settings)
        results[name] = {
            "status": "ok",
            "n_train": len(train.texts),
            "final_train_loss": loss,
            **classification_scores(list(test.labels), pred),
        }
        del model
    return results
