"""vLLM as a generation engine on a GPU (``generate.engine=vllm``): the base model with the trained LoRA adapter
served through ``LoRARequest``, continuous batching, the same prompts and sampling as every other engine.

Why vLLM: on a GPU it is the engine users already run (paged attention, continuous batching); the adapter is applied
as LoRA at inference time, so nothing is merged or converted. It is an optional extra (``pip install vllm`` in a
CUDA environment; it brings its own CUDA build of torch, so never into the CPU environment of the tests).

Sameness with the other engines (:mod:`dpsynth.generate.sampling`): prompts go in as the very token ids that
:func:`dpsynth.data.format.encode_prompt` built (``TokensPrompt``), generation stops at the same stop ids
(``stop_token_ids``; the tokenizer's EOS is vLLM's own stop too) and at ``max_new_tokens``, and ``temperature``,
``top_p`` and ``top_k`` (0 means off, which is vLLM's -1) are vLLM's parameters of the same meaning. Each prompt gets
its own seed (``seed * 1_000_003 + i``): vLLM seeds per request, so one shared seed would make every prompt with the
same codes write the same text.

Not yet run: the project's machines have had no GPU. ``tests/generate/test_engines.py`` compares it with HF
``generate`` token for token (greedy) where vLLM and CUDA are present, and elsewhere checks that it is refused with the
reason.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from dpsynth.errors import ConfigError
from dpsynth.generate.sampling import BatchedEngine, SamplingSettings, cut_at_stop


def vllm_available() -> str | None:
    """None when vLLM can run here, else why not (the reason a test skips with)."""
    import importlib.util

    import torch

    if importlib.util.find_spec("vllm") is None:
        return "vLLM is not installed (pip install vllm, in a CUDA environment)"
    if not torch.cuda.is_available():
        return "vLLM needs a CUDA GPU and none is visible"
    return None


class VLLMEngine(BatchedEngine):
    """``vllm.LLM`` on the base model; the adapter (if any) as one ``LoRARequest`` for every prompt."""

    name = "vllm"

    def __init__(self, model: str | Path, adapter_dir: Path | None, *, revision: str | None = None) -> None:
        why = vllm_available()
        if why is not None:
            raise ConfigError(f"generate.engine=vllm: {why}")
        from vllm import LLM
        from vllm.lora.request import LoRARequest

        rank = _adapter_rank(adapter_dir) if adapter_dir is not None else None
        self.llm = LLM(
            model=str(model),
            revision=revision,
            enable_lora=adapter_dir is not None,
            max_lora_rank=max(8, rank or 8),
            dtype="auto",
        )
        self.lora = LoRARequest("dpsynth", 1, str(adapter_dir)) if adapter_dir is not None else None

    def iter_batches(
        self, prompts: Sequence[list[int]], stops: Sequence[int], s: SamplingSettings
    ) -> Iterator[list[list[int]]]:
        """Chunks of ``batch_size`` prompts (for the progress bar; vLLM schedules its own batches inside each)."""
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        for start, end in self.spans(len(prompts), s):
            chunk = prompts[start:end]
            params = [
                SamplingParams(
                    n=1,
                    temperature=s.temperature,
                    top_p=s.top_p,
                    top_k=s.top_k if s.top_k > 0 else -1,
                    max_tokens=s.max_new_tokens,
                    seed=s.seed * 1_000_003 + start + i,
                    stop_token_ids=list(stops),
                )
                for i in range(len(chunk))
            ]
            outs: Any = self.llm.generate(
                [TokensPrompt(prompt_token_ids=list(p)) for p in chunk],
                params,
                lora_request=self.lora,
                use_tqdm=False,
            )
            yield [cut_at_stop(list(o.outputs[0].token_ids), stops, s.max_new_tokens) for o in outs]


def _adapter_rank(adapter_dir: Path) -> int:
    import json

    return int(json.loads((adapter_dir / "adapter_config.json").read_text())["r"])
