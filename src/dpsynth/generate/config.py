"""The generate stage's settings: how many records, how they are sampled, and by which engine.

>>> GenerateConfig(temperature=1.0, engine="hf").top_k
50
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from dpsynth._base import Section
from dpsynth.generate.select import SelectBy
from dpsynth.rundir import ARMS


class GenerateConfig(Section):
    """Sampling synthetic records from base model + adapter."""

    arms: list[Literal["dp", "no_dp"]] = Field(default_factory=lambda: list(ARMS))
    num_records: int = Field(100, gt=0)
    batch_size: int = Field(
        64,
        gt=0,
        description="prompts per engine batch (CTranslate2's replicas get evened-out batches); 64, 16 until "
        "2026-12-05: bench/bench_generate.py on 2 cores made 575 tokens/s at 64 against 476 at 16 (CTranslate2) and "
        "123 against 82 (HF, the 64 partly beside another job), and the demo's 200 records took 22 s against 37 "
        "(bench/results/demo-2026-12-05/)",
    )
    max_new_tokens: int = Field(128, gt=0)
    temperature: float = Field(
        1.1,
        gt=0,
        description="chosen on a public proxy (bench/results/recipe-search/, 'Sampling temperature'): 1.1 against 1.0 "
        "raised DP MAUVE and category accuracy and cost a few points of well-formed share",
    )
    top_p: float = Field(0.95, gt=0, le=1)
    top_k: int = Field(50, ge=0, description="0: the whole vocabulary; 50 is what HF generate always applied")
    seed: int = 0
    code_power: float | dict[str, float] = Field(
        1.0,
        description="flatten the released code distribution before drawing codes: each marginal p becomes p**power, "
        "renormalized (1: as released; 0: uniform over the public domain; 0.5: between), one number or one per code "
        "name, e.g. {category: 0}; post-processing, no privacy cost",
    )
    candidates: int = Field(
        1,
        ge=1,
        description="best-of-m: sample this many texts per drawn code and keep the one that reads most like it "
        "(generate.select_by; dpsynth.generate.select): public rules and models only, no privacy cost, m times the "
        "generation; fine-tuned arms and the frontier's eps-0 row (Private Evolution selects by its own votes)",
    )
    select_by: list[SelectBy] = Field(
        default_factory=lambda: list[SelectBy](["codes"]),
        min_length=1,
        description="what best-of-m prefers (generate.candidates > 1): codes, a zero-shot reading of each code by "
        "the public embedding model; well_formed, text that is not gibberish, cut off or repetitive (first)",
    )
    guidance_scale: float = Field(
        1.0,
        gt=0,
        description="classifier-free guidance over the control codes (dpsynth.generate.guidance): each token is "
        "sampled from log p(x|prompt) + (scale - 1) * (log p(x|prompt) - log p(x|prompt without the guided codes)); "
        "1: off; above 1 a record follows its code more closely; post-processing, no privacy cost; HF engine only "
        "(engine auto picks it: on 2 cores 4.6-4.9x CTranslate2's float32 generation time); fine-tuned arms and the "
        "frontier's eps-0 row; off by default (public proxy: rating and sentiment macro-F1 up 5-7 points, MAUVE "
        "down 0.08 with the rating guided at 2; bench/results/recipe-search/, 'int8 weights at generation, and "
        "guidance over the codes')",
    )
    guidance_codes: list[str] | None = Field(
        None,
        min_length=1,
        description="the codes that guidance sharpens, left out of the negative prompt (none: every code, so the "
        "negative prompt names no code at all)",
    )
    engine: Literal["auto", "hf", "ctranslate2", "vllm"] = Field(
        "auto",
        description="auto: ctranslate2 on CPU when installed (fastest on 2 cores, bench/bench_generate.py), else hf; "
        "every engine samples with the same settings and writes the same files; vllm: on a GPU, the adapter as a "
        "LoRARequest (optional: pip install vllm in a CUDA environment)",
    )
    ctranslate2_quantization: Literal["int8", "float32", "bfloat16", "int8_bfloat16"] = Field(
        "float32",
        description="weights of the merged model converted for ctranslate2 (cached beside the adapter); float32 since "
        "2026-12-05 (int8 before): on the public proxy one eps-4 SmolLM2 adapter wrote text with MAUVE 0.406 and "
        "0.387 in float32 (two seeds; 0.384 on HF) against 0.281 and 0.299 in int8, for 0.71x int8's tokens/s "
        "(bench/bench_generate.py side by side: 258 against 365); not for gemma-3-270m (one generation: 0.329 "
        "against 0.400 in int8); bench/results/recipe-search/, 'int8 weights at generation'. Checked after the choice "
        "on the reported sets (same eps-4 arm both ways): Yelp 0.514 against 0.407, Amazon Cell Phones 0.511 against "
        "0.400 (bench/results/frontier-*-float32/)",
    )
    ctranslate2_replicas: int | None = Field(
        None,
        ge=1,
        description="copies of the model that ctranslate2 runs side by side, each with its share of the threads and "
        "of the batches, each holding the model (none: one per torch thread up to 2 on CPU, 1 on CUDA); on 2 cores "
        "2 x 1 thread beat 1 x 2 threads (bench/bench_generate.py); a seed reproduces a run for the same number of "
        "replicas",
    )

    @field_validator("code_power")
    @classmethod
    def _power_in_unit_interval(cls, v: float | dict[str, float]) -> float | dict[str, float]:
        for power in v.values() if isinstance(v, dict) else [v]:
            if not 0.0 <= power <= 1.0:
                raise ValueError(f"each code power must be within [0, 1], got {power}")
        return v

    @model_validator(mode="after")
    def _guidance_needs_hf(self) -> GenerateConfig:
        if self.guidance_scale != 1.0 and self.engine in ("ctranslate2", "vllm"):
            raise ValueError(
                f"generate.guidance_scale={self.guidance_scale} needs the hf engine (engine auto picks it); "
                f"{self.engine} has no classifier-free guidance"
            )
        return self
