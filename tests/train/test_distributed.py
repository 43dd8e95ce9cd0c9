"""Distributed DP training (torchrun, gloo on CPU): the same mechanism, the same accounting, one release.

- the ranks' shares of every Poisson batch are the one-process batch, split (no draw, no empty step lost);
- the noise of the all-reduced gradient has standard deviation ``sigma * C / B`` for the global batch (noise added
  once, by rank 0, not once per rank), in 2 ranks spawned here;
- ``torchrun --nproc_per_node 2 -m dpsynth train`` on a prepared tiny run: the same epsilon as one process, with a
  fixed noise seed the same adapters (both arms) within float tolerance, one committed ledger release, rank 0's files
  only.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file

from dpsynth import api
from dpsynth.config import load_config
from dpsynth.errors import DPSynthError
from dpsynth.privacy.ledger import Ledger
from dpsynth.rundir import RunDir, read_json, read_jsonl
from dpsynth.train import distributed
from dpsynth.train.batching import LengthSortedPoissonSampler, ShardedPoissonSampler
from dpsynth.train.private import make_private

SIGMA, CLIP, BATCH, STEPS = 0.8, 2.0, 10.0, 5


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_the_ranks_shares_are_the_one_process_batch_split():
    lengths = [3, 9, 1, 7, 5, 2, 8, 4, 6, 10, 11, 12]

    def batches(**shard):
        cls = ShardedPoissonSampler if shard else LengthSortedPoissonSampler
        g = torch.Generator().manual_seed(5)
        return list(cls(lengths=lengths, num_samples=12, sample_rate=0.2, generator=g, steps=40, **shard))

    whole = batches()
    shares = [batches(rank=r, world_size=3) for r in range(3)]
    assert all(len(s) == 40 for s in shares)  # every rank takes every step, even with an empty share
    assert any(len(b) == 0 for s in shares for b in s)
    for step, batch in enumerate(whole):
        assert sorted(i for s in shares for i in s[step]) == sorted(batch)
    assert sum(len(b) for b in whole) > 0


def _noise_worker(rank: int, world: int, port: int, out: str) -> None:
    """One rank: STEPS DP steps of empty batches, so that the gradient is the noise alone, divided by B."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank)
    )
    torch.set_num_threads(1)
    dist = distributed.init_from_env()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64, bias=False))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    private = make_private(
        model,
        optimizer,
        noise_multiplier=SIGMA,
        max_grad_norm=CLIP,
        expected_batch_size=BATCH / world,
        mode="hooks",
        noise_generator=torch.Generator().manual_seed(100 + rank),  # distinct per rank: double noise would show
        distributed=dist.enabled,
    )
    grads = []
    for _ in range(STEPS):
        private.prepare_empty_batch()
        private.optimizer.step()
        grads.append(model[0].weight.grad.detach().clone().flatten())
        private.optimizer.zero_grad()
    torch.save({"grads": torch.cat(grads), "steps": private.noisy_steps}, Path(out) / f"rank{rank}.pt")
    distributed.shutdown()


def test_noise_is_added_once_for_the_global_batch(tmp_path):
    mp.spawn(_noise_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    assert ranks[0]["steps"] == ranks[1]["steps"] == STEPS
    assert torch.equal(ranks[0]["grads"], ranks[1]["grads"])  # every rank applies the same all-reduced update
    expected = SIGMA * CLIP / BATCH
    std = ranks[0]["grads"].std().item()  # 20,480 draws: about 0.5% standard error
    assert std == pytest.approx(expected, rel=0.03), (std, expected)
    assert abs(ranks[0]["grads"].mean().item()) < 0.05 * expected


def test_other_stages_refuse_to_run_on_several_ranks(tmp_path, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    cfg = load_config(None, [])
    for call in (lambda: api.prepare(cfg, tmp_path / "a"), lambda: api.evaluate(cfg, tmp_path / "a")):
        with pytest.raises(DPSynthError, match="only `dpsynth train` runs under torchrun"):
            call()
    assert not (tmp_path / "a").exists()


def _weights(run: RunDir, arm: str) -> dict[str, torch.Tensor]:
    return load_file(str(run.adapter(arm) / "adapter_model.safetensors"))


def _tiny(model_dir) -> list[str]:
    """The tiny Llama on 80 demo records, batches of 16 in physical chunks of 4."""
    return [
        f"model.name={model_dir}",
        "data.demo_records=80",
        "data.max_tokens=24",
        "train.batch_size=16",
        "train.physical_batch_size=4",
    ]


def test_torchrun_two_ranks_train_as_one_process(tmp_path, tiny_model_dir, monkeypatch):
    cfg = load_config(
        None,
        [
            *_tiny(tiny_model_dir),
            "train.max_steps=3",
            "train.noise_seed=11",
            "train.lora.dropout=0",  # dropout masks are drawn per rank: the one randomness that differs
            # float32: under bf16 autocast the matrix kernels round differently for each rank's half batch (Intel
            # AMX: 1e-3 relative), and Adam turns that into weight differences of up to 1% on tiny gradient entries
            "train.precision=float32",
        ],
    )
    one, two = RunDir(tmp_path / "one"), RunDir(tmp_path / "two")
    api.prepare(cfg, one.root)
    shutil.copytree(one.root, two.root)
    monkeypatch.setenv("DPSYNTH_LEDGER", str(tmp_path / "ledger-one.sqlite"))
    api.train(cfg, one.root, progress=False)

    ledger_two = tmp_path / "ledger-two.sqlite"
    env = {**os.environ, "DPSYNTH_LEDGER": str(ledger_two), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*command, "-m", "dpsynth", "train", "--out", str(two.root), "--quiet", "--resume"],  # no checkpoint yet
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert done.stdout.count("epsilon") >= 1 and done.stdout.count("training units") <= 1  # rank 0 prints, alone
    # a --resume without a checkpoint starts from step 0 with one notice per arm, not one per rank
    assert (done.stdout + done.stderr).count("no checkpoint in") == 2, done.stderr[-3000:]

    p1, p2 = read_json(one.privacy_json("dp")), read_json(two.privacy_json("dp"))
    for key in ("epsilon", "delta", "noise_multiplier", "sample_rate", "steps", "max_grad_norm", "mechanisms"):
        # the accountant's FFTs run with another thread count in each process: equal to ~1e-12, not bit for bit
        assert _close(p2[key], p1[key]), (key, p2[key], p1[key])
    assert p2["steps"] == 3

    # the same global batches and the same noise: the same updates, up to the order of float sums
    for arm in ("dp", "no_dp"):
        w1, w2 = _weights(one, arm), _weights(two, arm)
        assert set(w1) == set(w2)
        for name in w1:
            assert torch.allclose(w1[name], w2[name], rtol=1e-4, atol=1e-6), (arm, name)
        l1, l2 = read_jsonl(one.train_log(arm)), read_jsonl(two.train_log(arm))
        assert [r["batch_size"] for r in l2] == [r["batch_size"] for r in l1]  # the global batch, summed over ranks
        assert [r.get("loss") for r in l2] == pytest.approx([r.get("loss") for r in l1], rel=1e-4)
    assert read_json(two.control_codes("dp")) == read_json(one.control_codes("dp"))

    releases = Ledger(ledger_two).releases(p2["ledger"]["source"])
    assert len(releases) == 1 and p2["ledger"]["status"] == "committed"
    files = {p.relative_to(r.root) for r in (one, two) for p in r.root.rglob("*")}
    assert {p.relative_to(two.root) for p in two.root.rglob("*")} == {
        p.relative_to(one.root) for p in one.root.rglob("*")
    }, files  # rank 1 wrote nothing of its own


def _close(a, b) -> bool:
    """Equal, with floats compared to a relative 1e-9 (lists and dicts walked, other values exactly)."""
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-9)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_close(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_close(a[k], b[k]) for k in a)
    return bool(a == b)


def test_train_distributed_inside_run_launches_torchrun(tmp_path, tiny_model_dir, monkeypatch, capfd):
    """`train.distributed=true`: the pipeline's train stage runs as torchrun ranks (privacy.json says 2 processes), one
    ledger release per DP arm, and the later stages take the run directory unchanged; the ranks print no summary of
    their own (the launching command prints it once)."""
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = load_config(
        None,
        [
            *_tiny(tiny_model_dir),
            "train.max_steps=2",
            "train.distributed=true",
            "train.nproc_per_node=2",
            "generate.num_records=4",
            "generate.max_new_tokens=4",
        ],
    )
    out = tmp_path / "run"
    results = api.run_pipeline(cfg, out, progress=False, stages=("prepare", "train", "generate"))
    run = RunDir(out)
    privacy = read_json(run.privacy_json("dp"))
    assert privacy["processes"] == 2 and privacy["steps"] == 2
    assert results["train"]["dp"]["epsilon"] == privacy["epsilon"]
    assert read_json(run.privacy_json("no_dp"))["dp"] is False
    assert len(Ledger(privacy["ledger"]["path"]).releases(privacy["ledger"]["source"])) == 1
    assert len(read_jsonl(run.generated("dp"))) == 4
    assert "accountant" not in capfd.readouterr().out  # rank 0's training table is left to the launcher


def test_a_failed_torchrun_launch_is_a_clear_error(tmp_path, tiny_model_dir, monkeypatch):
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    base = _tiny(tiny_model_dir)
    out = tmp_path / "run"
    api.prepare(load_config(None, base), out)
    missing = f"model.name={tmp_path / 'no-such-model'}"  # every rank fails to load it
    cfg = load_config(None, [*base, missing, "train.distributed=true", "train.nproc_per_node=2"])
    ledger = tmp_path / "ledger.sqlite"
    monkeypatch.setenv("DPSYNTH_LEDGER", str(ledger))
    with pytest.raises(DPSynthError, match=r"torchrun with 2 training processes exited.*dpsynth budget abandon"):
        api.train(cfg, out, progress=False)
    assert not RunDir(out).privacy_json("dp").exists()
    source = read_json(out / "data" / "prepare.json")["source"]["fingerprint"]
    if ledger.exists():  # a rank may have reserved before it failed: never a committed release
        assert Ledger(ledger).releases(source) == []


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of torchrun's worker with ``RANK=rank`` (Linux /proc), or None while it is not started."""
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) != parent:
                continue
            env = (stat.parent / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if f"RANK={rank}".encode() in env:
            return int(stat.parent.name)
    return None


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="finds torchrun's workers through Linux /proc")
def test_a_rank_that_dies_leaves_a_resumable_checkpoint_and_no_release(tmp_path, tiny_model_dir):
    """Rank 1 is killed (SIGKILL) once rank 0 has checkpointed a step: torchrun fails, the ledger holds no committed
    release and the checkpoint is there; `--resume` under torchrun finishes the planned steps with one release."""
    import signal
    import time

    steps = ["train.epochs=50", "train.max_steps=24", "train.checkpoint_every=2"]  # 24 planned steps
    cfg = load_config(None, [*_tiny(tiny_model_dir), "train.arms=[dp]", *steps])
    run = RunDir(tmp_path / "run")
    api.prepare(cfg, run.root)
    ledger = tmp_path / "ledger.sqlite"
    env = {**os.environ, "DPSYNTH_LEDGER": str(ledger), "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    train = ["-m", "dpsynth", "train", "--out", str(run.root), "--quiet"]
    proc = subprocess.Popen([*command, *train], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    meta = run.checkpoints("dp") / "meta.json"
    killed_at = None
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        step = read_json(meta).get("step", 0) if meta.is_file() else 0
        pid = _rank_pid(proc.pid, 1)
        if step >= 2 and pid is not None:
            os.kill(pid, signal.SIGKILL)
            killed_at = step
            break
        time.sleep(0.05)
    assert killed_at is not None, "training ended (or timed out) before a rank could be killed"
    assert proc.wait(timeout=120) != 0
    assert not run.privacy_json("dp").exists()
    source = read_json(run.prepare_json)["source"]["fingerprint"]
    assert Ledger(ledger).releases(source) == []  # nothing committed by a run that died
    saved = read_json(meta)["step"]
    assert 2 <= saved < 24

    done = subprocess.run([*command, *train, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    privacy = read_json(run.privacy_json("dp"))
    assert privacy["steps"] == 24 and privacy["processes"] == 2 and privacy["ledger"]["status"] == "committed"
    assert len(Ledger(ledger).releases(source)) == 1
    log = read_jsonl(run.train_log("dp"))
    assert [r["step"] for r in log] == list(range(1, 25))  # the steps before the crash kept, the rest trained once
