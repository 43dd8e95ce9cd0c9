"""The utility and quality sections: train on X, test on real; text-quality counts with the real base rate.

Thin orchestration of :mod:`dpsynth.evaluate.utility` and :mod:`dpsynth.evaluate.quality`.

Utility. One task per control code (rating; category when the real test split has more than one); training sets:
the real training sample (``real``), each arm's synthetic records labelled with the codes they were generated from,
and the DP logistic-regression baseline on the real training sample at the DP arm's epsilon (``dp_logreg``; the
library calls it ``real_dp``). Every classifier is tested on the same real test sample; both feature families. With
``evaluate.llm_classifier``, a third family ``llm``: the base LLM fine-tuned per source (no ``dp_logreg`` row there:
it has no DP counterpart; see :mod:`dpsynth.evaluate.llm_classifier`).

Quality. Counts of each category on every arm and on the real test sample (a base rate: real reviews also end
abruptly). For real text only counts leave this module: the library's example indices are dropped for it; for the
synthetic arms a few example texts per category are kept, chosen by the caller's ``safe`` filter.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dpsynth.evaluate.collect import EvalInputs, MetricList
from dpsynth.evaluate.config import EvaluateConfig
from dpsynth.evaluate.fidelity_eval import Embeddings
from dpsynth.evaluate.quality import CATEGORIES, quality_counts
from dpsynth.evaluate.utility import DP_NAME, LabeledSet, train_on_x_test_on_real

if TYPE_CHECKING:
    from dpsynth.config import Config, LoraSettings, ModelConfig
    from dpsynth.evaluate.llm_classifier import LLMClassifierSettings

DP_LOGREG = "dp_logreg"
UTILITY_COLUMNS = ["source", "family", "task", "accuracy", "macro_f1"]
QUALITY_COLUMNS = ["arm", "n", *CATEGORIES]


def dp_logreg_epsilon(inputs: EvalInputs, e: EvaluateConfig) -> float | None:
    """The baseline's epsilon: ``evaluate.utility_dp_epsilon``, else the DP arm's (None: no DP arm, no baseline)."""
    if e.utility_dp_epsilon is not None:
        return e.utility_dp_epsilon
    eps = (inputs.dp_privacy or {}).get("epsilon")
    return float(eps) if eps is not None else None


@dataclass(frozen=True)
class LLMUtility:
    """What the optional LLM classifier needs: the run's base model and LoRA settings, and how to fine-tune."""

    model: ModelConfig
    lora: LoraSettings
    settings: LLMClassifierSettings
    tasks: tuple[str, ...]


def llm_settings(cfg: Config, inputs: EvalInputs, *, progress: bool = False) -> LLMUtility:
    """The LLM classifier's settings from the run's configuration (texts cut at the run's ``data.max_tokens``)."""
    from dpsynth.evaluate.llm_classifier import LLMClassifierSettings

    e = cfg.evaluate
    settings = LLMClassifierSettings(
        epochs=e.llm_classifier_epochs,
        learning_rate=e.llm_classifier_learning_rate,
        batch_size=e.llm_classifier_batch_size,
        max_tokens=int(inputs.info["max_tokens"]),
        seed=e.seed,
        progress=progress,
    )
    tasks = e.llm_classifier_tasks if e.llm_classifier_tasks is not None else [inputs.label] if inputs.label else []
    # The classifier is a non-DP measurement: LoRA on every block, whatever top_k the generators train (its choice
    # rests on DP noise and throughput, which do not apply here) and both LoRA factors (freeze_a is a DP choice too),
    # so its figures stay comparable across settings.
    lora = cfg.train.lora.model_copy(update={"top_k_layers": None, "freeze_a": False})
    return LLMUtility(cfg.model, lora, settings, tuple(tasks))


def utility_section(
    inputs: EvalInputs, emb: Embeddings, e: EvaluateConfig, metrics: MetricList, *, llm: LLMUtility | None = None
) -> dict[str, Any]:
    """The TSTR table for every task; returns ``tables.utility``. ``llm``: also the fine-tuned LLM classifier."""
    epsilon = dp_logreg_epsilon(inputs, e)
    unit_contribution = int(inputs.info.get("max_records_per_user", 1))
    table: dict[str, Any] = {
        "columns": UTILITY_COLUMNS,
        "rows": [],
        "majority_accuracy": {},
        "tasks": {},
        "dp_logreg": {"epsilon": epsilon, "lambda": e.utility_dp_lambda, "unit_contribution": unit_contribution},
        "feature_importance": {},
    }
    for spec in inputs.specs:
        task = spec.name
        test_idx = [i for i, r in enumerate(inputs.test) if task in r.codes]
        train_idx = [i for i, r in enumerate(inputs.train) if task in r.codes]
        test = LabeledSet(
            [inputs.test[i].text for i in test_idx], [inputs.test[i].codes[task] for i in test_idx], emb.test[test_idx]
        )
        sets = {
            "real": LabeledSet(
                [inputs.train[i].text for i in train_idx],
                [inputs.train[i].codes[task] for i in train_idx],
                emb.train[train_idx],
            )
        }
        for arm, rows in inputs.synthetic.items():
            idx = [i for i, row in enumerate(rows) if task in (row.get("codes") or {})]
            sets[arm] = LabeledSet(
                [str(rows[i]["text"]) for i in idx], [rows[i]["codes"][task] for i in idx], emb.synthetic[arm][idx]
            )
        result = train_on_x_test_on_real(
            sets,
            test,
            classes=list(spec.values),
            dp_epsilon=epsilon,
            dp_lam=e.utility_dp_lambda,
            unit_contribution=unit_contribution,
            top_k=e.top_features,
        )
        table["tasks"][task] = {"status": result["status"], "note": result.get("note", ""), "n_test": len(test_idx)}
        if result["status"] != "ok":
            continue  # e.g. a single category in the test split: no task, and no metric pretending there is one
        if "majority_accuracy" in result:
            table["majority_accuracy"][task] = result["majority_accuracy"]
            metrics.add(
                f"utility.majority.{task}.accuracy",
                "utility",
                "real",
                result["majority_accuracy"],
                "tstr_accuracy",
                "the constant classifier predicting the real training sample's most frequent class (chance level)",
            )
        _code_agreement(task, sets, test, inputs.synthetic, metrics)
        for family, by_source in result["results"].items():
            for source, r in by_source.items():
                name = DP_LOGREG if source == DP_NAME else source
                table["rows"].append([name, family, task, r.get("accuracy"), r.get("macro_f1")])
                extra = {"n_train": r.get("n_train"), "status": r.get("status"), "n_test": len(test_idx)}
                if r.get("note"):
                    extra["note"] = r["note"]
                q = f"{family} features, label {task}"
                metrics.add(
                    f"utility.{family}.{task}.accuracy", "utility", name, r.get("accuracy"), "tstr_accuracy", q, **extra
                )
                metrics.add(
                    f"utility.{family}.{task}.macro_f1", "utility", name, r.get("macro_f1"), "tstr_macro_f1", q, **extra
                )
                if source == DP_NAME:
                    table["dp_logreg"].setdefault("privacy", {})[f"{family}.{task}"] = r.get("privacy")
        if llm is not None and task in llm.tasks:
            from dpsynth.evaluate.llm_classifier import llm_train_on_x_test_on_real

            by_source = llm_train_on_x_test_on_real(sets, test, list(spec.values), llm.model, llm.lora, llm.settings)
            result["results"]["llm"] = by_source
            for source, r in by_source.items():
                table["rows"].append([source, "llm", task, r.get("accuracy"), r.get("macro_f1")])
                extra = {"n_train": r.get("n_train"), "status": r.get("status"), "n_test": len(test_idx)}
                q = f"the base LLM fine-tuned (LoRA, no DP) as a classifier, label {task}"
                metrics.add(
                    f"utility.llm.{task}.accuracy", "utility", source, r.get("accuracy"), "tstr_accuracy", q, **extra
                )
                metrics.add(
                    f"utility.llm.{task}.macro_f1", "utility", source, r.get("macro_f1"), "tstr_macro_f1", q, **extra
                )
        for source, fi in result["feature_importance"].items():
            table["feature_importance"][f"{source}.{task}"] = fi
            metrics.add(
                f"utility.tfidf.{task}.feature_importance_spearman",
                "utility",
                source,
                fi.get("spearman"),
                "feature_importance_spearman",
                f"label {task}",
                n_terms=fi.get("n_terms"),
                top_k_overlap=fi.get("top_k_overlap"),
            )
    return table


def _code_agreement(
    task: str, sets: dict[str, LabeledSet], test: LabeledSet, arms: dict[str, Any], metrics: MetricList
) -> None:
    """``utility.code_agreement.<task>`` per synthetic arm: do its records read like the code they were generated
    from, to a classifier trained on the real training sample? (:mod:`dpsynth.evaluate.agreement`)"""
    from dpsynth.evaluate.agreement import code_agreement

    real = sets["real"]
    for arm in arms:
        out = code_agreement(
            real.features(),
            list(real.labels),
            sets[arm].features(),
            list(sets[arm].labels),
            test_features=test.features(),
            test_labels=list(test.labels),
        )
        metrics.add(
            f"utility.code_agreement.{task}",
            "utility",
            arm,
            out["agreement"],
            "code_agreement",
            f"label {task}; reference = the same classifier's accuracy on the real test sample",
            n=out["n"],
            reference=out["reference"],
        )


def quality_section(
    inputs: EvalInputs, e: EvaluateConfig, metrics: MetricList, safe: Callable[[str], bool], per_category: int = 2
) -> dict[str, Any]:
    """Quality counts per arm and for the real test sample; returns ``tables.quality``.

    ``safe(text)``: whether a synthetic text may be shown (see :func:`dpsynth.evaluate.run`); up to ``per_category``
    such texts per category and arm are kept as examples.
    """
    table: dict[str, Any] = {"columns": QUALITY_COLUMNS, "rows": [], "rates": {}, "examples": {}}
    sides: dict[str, list[str]] = {arm: [str(r["text"]) for r in rows] for arm, rows in inputs.synthetic.items()}
    sides["real"] = [r.text for r in inputs.test]
    for arm, texts in sides.items():
        q = quality_counts(texts, max_records=e.max_records)
        table["definitions"], table["parameters"] = q["definitions"], q["parameters"]
        table["rows"].append([arm, q["n"], *(q["counts"][c] for c in CATEGORIES)])
        table["rates"][arm] = q["rates"]
        for c in CATEGORIES:
            qualifier = "arm real: the real test sample (the base rate)" if arm == "real" else None
            metrics.add(
                f"quality.{c}.rate",
                "quality",
                arm,
                q["rates"][c],
                f"quality_{c}",
                qualifier,
                n=q["n"],
                count=q["counts"][c],
            )
        if arm != "real":  # never turn the real split's indices into text
            table["examples"][arm] = {c: first_safe(texts, q["examples"][c], safe, per_category) for c in CATEGORIES}
    return table


def first_safe(texts: list[str], indices: list[int], safe: Callable[[str], bool], k: int) -> list[str]:
    """The first ``k`` of ``texts[i] for i in indices`` that ``safe`` accepts (checked lazily: the check is costly)."""
    out: list[str] = []
    for i in indices:
        if len(out) >= k:
            break
        if safe(texts[i]):
            out.append(texts[i])
    return out
