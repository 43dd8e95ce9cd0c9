"""The pretrained model's settings: which causal LM, its weights' precision and device, or an endpoint that serves it.

>>> ModelConfig().name
'HuggingFaceTB/SmolLM2-135M-Instruct'
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field

from dpsynth._base import Section

DEFAULT_MODEL = "HuggingFaceTB/SmolLM2-135M-Instruct"


class ModelConfig(Section):
    """The pretrained causal LM: a built-in name, a local folder, a GGUF file, or a hub id (needs internet)."""

    name: str = DEFAULT_MODEL
    revision: str | None = None
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto",
        description="auto: float32 on CPU, bfloat16 on CUDA; training under bf16 autocast (train.precision) loads "
        "the frozen weights in bfloat16 on a CPU too, and so does the evaluation's scoring (evaluate.precision)",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    vocabulary: Literal["full", "ascii"] = Field(
        "full",
        description="ascii: train and generate over the vocabulary entries of printable ASCII only (and the byte "
        "tokens, which still spell any other character), a copy of the model cut once and cached "
        "(dpsynth.models.vocab); a property of the tokenizer alone, no privacy cost. For SentencePiece-style "
        "tokenizers with byte fallback (gemma-3-270m: 262,144 -> 144,294 rows; a DP step's timing with about as many "
        "rows made 1.44x the tokens/s)",
    )
    attn_implementation: Literal["eager", "sdpa"] = "sdpa"
    cache_dir: Path | None = Field(None, description="where converted models are cached (default: user cache)")
    api_base: str | None = Field(
        None,
        pattern=r"^https?://",
        description="an OpenAI-compatible endpoint (e.g. http://localhost:8000/v1) that serves the model: "
        "generator=pe calls it instead of loading the model here (dpsynth.generate.api_engine)",
    )
    api_model: str | None = Field(None, description="the model's name on the endpoint (default: model.name)")
    api_key_env: str = Field("OPENAI_API_KEY", description="environment variable holding the endpoint's key")
    api_concurrency: int = Field(4, gt=0, description="requests in flight at once")
    api_timeout: float = Field(600.0, gt=0, description="seconds before one request fails")
