"""CTranslate2 as a generation engine: batched sampling on the merged model, several times HF ``generate`` on CPU.

The model comes from :func:`dpsynth.models.convert.ctranslate2_model` (base + adapter merged, converted once,
cached). Prompts go in as the same token ids as for HF (as vocabulary strings, which CTranslate2 maps back to the
same ids, since its vocabulary is the tokenizer's in id order); stop ids, ``max_new_tokens`` (``max_length`` with
the prompt excluded from the result), top-k, temperature and top-p mean what :mod:`dpsynth.generate.sampling`
says. Finished rows leave the batch, so a long row does not make the others compute padding.

**Replicas.** On a small model and few CPU cores, R copies of the model with one thread each (each running its own
batches) generate more tokens per second than one copy spreading every matrix product over R threads: on 2 cores,
2 x 1 thread made 1.05-1.5x the tokens/s of 1 x 2 threads at batch 32-64 (``bench/bench_generate.py`` measures
both side by side). CTranslate2 has this built in (``inter_threads``), but unusable here: it seeds every worker
thread from the same process-wide seed, so two workers draw the same random numbers, and two batches of the same
control code come out as identical records (checked: the first record of each sub-batch was the same); and which
worker takes which batch is up to the scheduler, so a seed no longer reproduces a run. Hence R separate
``Generator`` objects, each seeded apart, each given a fixed share of the batches (batch ``i`` to replica
``i mod R``), run from R Python threads (CTranslate2 releases the GIL while it computes).

Seeding: CTranslate2 seeds each worker thread's random generator once, when the thread first samples, from the
process-wide seed. :meth:`CT2Engine.iter_batches` therefore sets replica ``k``'s seed, creates a fresh ``Generator``
(new threads) and, when there are several replicas, has it sample one token at once, so that its thread is seeded
before the next replica's seed is set. One call with the same prompts, settings, seed and number of replicas gives
the same texts; with one replica, exactly the texts of the engine before replicas existed.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from dpsynth.generate.sampling import BatchedEngine, SamplingSettings, batch_spans, cut_at_stop


def replica_seed(seed: int, k: int) -> int:
    """Replica ``k``'s seed: ``seed`` itself for the first (one replica samples as before), then seeds that no two
    (seed, replica) pairs share in practice.

    >>> replica_seed(7, 0), replica_seed(7, 1) != replica_seed(7, 0), replica_seed(7, 1) == replica_seed(7, 1)
    (7, True, True)
    """
    if k == 0:
        return seed
    return int(np.random.SeedSequence([seed, k]).generate_state(1)[0])


class CT2Engine(BatchedEngine):
    """Sampling with ``replicas`` ``ctranslate2.Generator`` copies on CPU (or CUDA) from a converted model folder."""

    name = "ctranslate2"

    def __init__(
        self, model_dir: Path, tokenizer: Any, *, device: str = "cpu", threads: int = 0, replicas: int = 1
    ) -> None:
        if replicas < 1:
            raise ValueError(f"replicas must be at least 1, got {replicas}")
        self.model_dir = Path(model_dir)
        self.tokenizer = tokenizer
        self.device = device
        self.threads = threads
        self.replicas = replicas

    def _generator(self, seed: int, *, warm: bool) -> Any:
        """A fresh ``Generator`` whose sampling thread is seeded with ``seed`` (at once when ``warm``)."""
        import ctranslate2
        import torch

        ctranslate2.set_random_seed(seed)
        total = self.threads or os.cpu_count() or 1  # 0 would give every copy CTranslate2's own default
        threads = max(1, total // self.replicas)
        torch_threads = torch.get_num_threads()
        generator = ctranslate2.Generator(
            str(self.model_dir),
            device=self.device,
            compute_type="default",  # the converted quantization, or the nearest one this processor supports
            inter_threads=1,
            intra_threads=threads,
        )
        # The constructor sets the calling thread's OpenMP thread count (which torch shares) to intra_threads: left
        # so, every later torch step of this process (training the next row, embeddings) would run on one thread.
        torch.set_num_threads(torch_threads)
        if warm:  # seed this generator's thread now, before the next replica changes the process-wide seed
            first = self.tokenizer.convert_ids_to_tokens([self.tokenizer.eos_token_id or 0])
            generator.generate_batch([first], max_length=1, sampling_topk=2, include_prompt_in_result=False)
        return generator

    def spans(self, n: int, s: SamplingSettings) -> list[tuple[int, int]]:
        """Batches of at most ``s.batch_size``, as many as a multiple of the replicas, sizes evened out
        (:func:`~dpsynth.generate.sampling.batch_spans`): every round keeps every replica busy for about as long."""
        return batch_spans(n, s.batch_size, parts=self.replicas)

    def iter_batches(
        self, prompts: Sequence[list[int]], stops: Sequence[int], s: SamplingSettings
    ) -> Iterator[list[list[int]]]:
        """The outputs batch by batch (:meth:`spans`), in order, computed lazily one round (one batch per replica)
        at a time (the benchmark interleaves engines this way)."""
        r = self.replicas
        generators = [self._generator(replica_seed(s.seed, k), warm=r > 1) for k in range(r)]

        def run(k: int, span: tuple[int, int]) -> list[list[int]]:
            batch = [self.tokenizer.convert_ids_to_tokens(list(p)) for p in prompts[span[0] : span[1]]]
            results = generators[k].generate_batch(
                batch,
                max_length=s.max_new_tokens,
                include_prompt_in_result=False,
                end_token=list(stops),
                return_end_token=False,
                sampling_topk=s.top_k,
                sampling_topp=s.top_p,
                sampling_temperature=s.temperature,
            )
            return [cut_at_stop(res.sequences_ids[0], stops, s.max_new_tokens) for res in results]

        spans = self.spans(len(prompts), s)
        if r == 1:
            for span in spans:
                yield run(0, span)
            return
        with ThreadPoolExecutor(max_workers=r) as pool:
            for first in range(0, len(spans), r):
                # batch i always goes to replica i mod r, in order: the same texts whatever the threads' timing
                futures = [pool.submit(run, k, span) for k, span in enumerate(spans[first : first + r])]
                for f in futures:
                    yield f.result()
