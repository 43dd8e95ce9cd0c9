"""dpsynth: differentially private synthetic data, with the evidence of how private and how useful it is."""

import os

# OpenMP threads (torch's and CTranslate2's) that wait by spinning take CPU time from the thread they wait for when the
# cores are shared: on 2 cores beside other jobs, HF generate of a tiny Llama took 18-29 s with spinning waits and
# 5.3 s with passive ones (1 thread: 2.9-5.4 s). libgomp reads this once, when torch is first imported, so it only
# takes effect when dpsynth is imported first (as the CLI does); an explicit OMP_WAIT_POLICY is kept.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
