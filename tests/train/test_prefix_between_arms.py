"""`dpsynth train` builds the frozen-prefix cache once for both arms: the non-DP arm reuses the DP arm's cache and
trains exactly as it does with a cache of its own."""

from __future__ import annotations

from dpsynth import api
from dpsynth.config import load_config
from dpsynth.rundir import RunDir, read_jsonl
from dpsynth.train import prefix
from dpsynth.train.prefix import PrefixCache


def _cfg(tiny_model_dir, arms: str):
    return load_config(
        None,
        [
            f"model.name={tiny_model_dir}",
            "data.demo_records=60",
            "data.max_tokens=24",
            f"train.arms={arms}",
            "train.batch_size=8",
            "train.max_steps=3",
            "train.lora.top_k_layers=1",
            "train.noise_seed=0",
            "privacy.target_epsilon=null",
            "privacy.noise_multiplier=0.5",
        ],
    )


def test_both_arms_share_one_prefix_cache_and_the_baseline_trains_the_same(tmp_path, tiny_model_dir, monkeypatch):
    built: list[int] = []
    real_build = PrefixCache.build

    def spy(*args, **kwargs):
        cache = real_build(*args, **kwargs)
        built.append(len(cache.lengths))
        return cache

    monkeypatch.setattr(PrefixCache, "build", spy)
    both = tmp_path / "both"
    api.prepare(_cfg(tiny_model_dir, "[dp, no_dp]"), both)
    api.train(_cfg(tiny_model_dir, "[dp, no_dp]"), both, progress=False)
    n = len(read_jsonl(RunDir(both).train))
    assert built == [1, n]  # the one-example probe and the full cache, for the DP arm only
    assert prefix._BETWEEN_ARMS is None  # not kept past the train stage

    built.clear()
    alone = tmp_path / "alone"
    api.prepare(_cfg(tiny_model_dir, "[no_dp]"), alone)
    api.train(_cfg(tiny_model_dir, "[no_dp]"), alone, progress=False)
    assert built == [1, n]  # a cache of its own

    def losses(out):
        return [r["loss"] for r in read_jsonl(RunDir(out).train_log("no_dp")) if "loss" in r]

    assert len(losses(both)) == 3
    assert losses(both) == losses(alone)
