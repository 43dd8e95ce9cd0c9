"""Chat completions from any OpenAI-compatible HTTP endpoint (``model.api_base``): how Private Evolution reaches a
served model (vLLM, the llama.cpp server, ``transformers serve``, a hosted API).

Why a separate engine: the local engines (:mod:`dpsynth.generate.engine`) take token ids and a tokenizer; a served
model takes *messages* and renders its own chat template, so this engine gets exactly the messages that the local
path renders (:func:`dpsynth.data.format.prompt_messages` and PE's variation turn) and nothing else. Sampling means
what it means in the other engines (``generate.temperature``, ``top_p``, ``max_new_tokens``; ``top_k`` is sent as
the ``top_k`` extension that vLLM and llama.cpp read, and left out when it is 0, for servers that refuse unknown
fields); stopping is the server's (its end-of-turn token), as the local engines stop at the model's.

The client is the ``openai`` package (retries, timeouts, error types), and requests run ``model.api_concurrency`` at a
time in threads, in order of the prompts. Each request carries ``seed + i``, so a server that honours seeds repeats a
run. The API key is read from the environment variable named by ``model.api_key_env`` and never stored in a run
directory; a local server needs none.

Only PE uses this engine: it sends public codes and synthetic text, never a private record (votes are computed here,
on this machine). Fine-tuned arms need their adapter on the server, which is the vLLM engine's job (issue 11).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from tqdm.auto import tqdm

from dpsynth.errors import DPSynthError
from dpsynth.generate.sampling import SamplingSettings

Messages = list[dict[str, str]]


class OpenAIChatEngine:
    """``complete(conversations, settings)`` -> one assistant reply per conversation, from ``api_base``."""

    name = "openai-api"

    def __init__(self, api_base: str, model: str, *, api_key_env: str, concurrency: int, timeout: float) -> None:
        try:
            from openai import OpenAI
        except ImportError as exc:  # pragma: no cover - the 'api' extra is missing
            raise DPSynthError("model.api_base needs the openai package: pip install 'dpsynth[api]'") from exc
        self.api_base = api_base
        self.model = model
        self.concurrency = concurrency
        key = os.environ.get(api_key_env) or "EMPTY"  # local servers ignore it; hosted ones need the variable
        self.client = OpenAI(base_url=api_base, api_key=key, timeout=timeout)

    def _one(self, messages: Messages, s: SamplingSettings, seed: int) -> str:
        from openai import OpenAIError

        extra: dict[str, Any] = {"top_k": s.top_k} if s.top_k > 0 else {}
        try:
            out = self.client.chat.completions.create(
                model=self.model,
                messages=messages,  # type: ignore[arg-type]
                max_tokens=s.max_new_tokens,
                temperature=s.temperature,
                top_p=s.top_p,
                seed=seed,
                extra_body=extra or None,
            )
        except OpenAIError as exc:
            detail = getattr(exc, "body", None)  # the server's own words (e.g. which field it refused)
            msg = f"model.api_base={self.api_base}: the request for model {self.model!r} failed: {exc}"
            msg += f" {detail}" if detail else ""
            if "top_k" in msg:
                msg += " (this server does not take top_k: set generate.top_k=0 to sample by top-p alone)"
            raise DPSynthError(msg) from exc
        if not out.choices:
            raise DPSynthError(f"model.api_base={self.api_base}: the server answered with no choice")
        return out.choices[0].message.content or ""

    def complete(
        self, conversations: Sequence[Messages], settings: SamplingSettings, *, progress: bool = False, desc: str = ""
    ) -> list[str]:
        """The replies, in the order of ``conversations``."""
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = [pool.submit(self._one, m, settings, settings.seed + i) for i, m in enumerate(conversations)]
            return [f.result() for f in tqdm(futures, desc=desc or self.name, disable=not progress, unit="record")]
