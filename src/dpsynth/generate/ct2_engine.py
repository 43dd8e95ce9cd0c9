"""CTranslate2 as a generation engine: batched sampling on the merged model, several times HF ``generate`` on CPU.

The model comes from :func:`dpsynth.models.convert.ctranslate2_model` (base + adapter merged, converted once,
cached). Prompts go in as the same token ids as for HF (as vocabulary strings, which CTranslate2 maps back to the
same ids, since its vocabulary is the tokenizer's in id order); stop ids, ``max_new_tokens`` (``max_length`` with
the prompt excluded from the result), top-k, temperature and top-p mean what :mod:`dpsynth.generate.sampling`
says. Finished rows leave the batch, so a long row does not make the others compute padding.

Seeding: CTranslate2 seeds each worker thread's random generator once, when the thread first samples, from the
process-wide seed. :meth:`CT2Engine.generate` therefore sets the seed and then creates a fresh ``Generator`` (new
threads), so one call with the same prompts, settings and seed gives the same texts.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from dpsynth.generate.sampling import BatchedEngine, SamplingSettings, cut_at_stop


class CT2Engine(BatchedEngine):
    """Sampling with a ``ctranslate2.Generator`` on CPU (or CUDA) from a converted model folder."""

    name = "ctranslate2"

    def __init__(self, model_dir: Path, tokenizer: Any, *, device: str = "cpu", threads: int = 0) -> None:
        self.model_dir = Path(model_dir)
        self.tokenizer = tokenizer
        self.device = device
        self.threads = threads

    def _generator(self) -> Any:
        import ctranslate2

        return ctranslate2.Generator(
            str(self.model_dir),
            device=self.device,
            compute_type="default",  # the converted quantization, or the nearest one this processor supports
            inter_threads=1,
            intra_threads=self.threads,
        )

    def iter_batches(
        self, prompts: Sequence[list[int]], stops: Sequence[int], s: SamplingSettings
    ) -> Iterator[list[list[int]]]:
        """The outputs batch by batch, computed lazily (the benchmark interleaves engines this way)."""
        import ctranslate2

        ctranslate2.set_random_seed(s.seed)
        generator = self._generator()  # after the seed: its threads seed their generators from it
        for start in range(0, len(prompts), s.batch_size):
            batch = [self.tokenizer.convert_ids_to_tokens(list(p)) for p in prompts[start : start + s.batch_size]]
            results = generator.generate_batch(
                batch,
                max_length=s.max_new_tokens,
                include_prompt_in_result=False,
                end_token=list(stops),
                return_end_token=False,
                sampling_topk=s.top_k,
                sampling_topp=s.top_p,
                sampling_temperature=s.temperature,
            )
            yield [cut_at_stop(r.sequences_ids[0], stops, s.max_new_tokens) for r in results]
