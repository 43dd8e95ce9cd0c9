"""PE against a real OpenAI-compatible server (``model.api_base``): ``transformers serve`` on the tiny Llama, started
and stopped here. The server must answer every model call (the run never loads a model itself: ``model.name`` names
nothing loadable), and it must get the very prompts that the local engines render."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import pytest

from dpsynth import api
from dpsynth.config import load_config
from dpsynth.data.format import encode_prompt
from dpsynth.errors import DPSynthError
from dpsynth.pe.apis import PEModel
from dpsynth.privacy.ledger import Ledger
from dpsynth.rundir import RunDir, read_json, read_jsonl

pytest.importorskip("openai", reason="model.api_base needs the openai package (the 'api' extra)")
pytest.importorskip("fastapi", reason="transformers serve needs fastapi (the 'serve' extra)")
pytest.importorskip("uvicorn", reason="transformers serve needs uvicorn (the 'serve' extra)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tiny_model_dir, tmp_path_factory):
    """`transformers serve` on the tiny model; yields (base URL, log path); stopped at the end of the module."""
    port = _free_port()
    log = tmp_path_factory.mktemp("serve") / "serve.log"
    cmd = [sys.executable, "-m", "transformers.cli.transformers", "serve", str(tiny_model_dir), "--port", str(port)]
    with log.open("w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}/v1"
    try:
        for _ in range(240):
            if proc.poll() is not None:
                pytest.fail(f"transformers serve exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{base}/models", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        else:
            pytest.fail(f"transformers serve did not answer in 120 s: {log.read_text()[-2000:]}")
        yield base, log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()


def _overrides(base: str, model_dir) -> list[str]:
    return [
        "generator=pe",
        "model.name=not-a-local-model",  # nothing here may load it: every model call goes to the server
        f"model.api_base={base}",
        f"model.api_model={model_dir}",
        "data.demo_records=80",
        "data.max_tokens=24",
        "generate.num_records=6",
        "generate.max_new_tokens=8",
        "generate.top_k=0",  # transformers serve refuses the top_k extension (vLLM and llama.cpp take it)
        "pe.iterations=2",
        "pe.variations=1",
        "privacy.target_epsilon=4",
    ]


def test_pe_runs_against_a_served_model(server, tiny_model_dir, tmp_path):
    base, log = server
    cfg = load_config(None, _overrides(base, tiny_model_dir))
    out = tmp_path / "run"
    api.prepare(cfg, out)
    before = log.read_text().count("POST /v1/chat/completions")
    result = api.generate(cfg, out, progress=False)
    run = RunDir(out)
    rows = read_jsonl(run.generated("pe"))
    assert result["pe"]["records"] == 6 and len(rows) == 6
    assert all(set(r) >= {"index", "arm", "text", "codes"} and r["arm"] == "pe" for r in rows)
    # N (1 + L) random samples and N L variations in the one later iteration, each one request to the server
    calls = log.read_text().count("POST /v1/chat/completions") - before
    assert calls == 6 * 2 + 6 * 1
    privacy = read_json(run.privacy_json("pe"))
    assert privacy["model_api_base"] == base and privacy["model"] == str(tiny_model_dir)
    assert privacy["ledger"]["status"] == "committed"
    source = read_json(out / "data" / "prepare.json")["source"]["fingerprint"]
    assert len(Ledger(privacy["ledger"]["path"]).releases(source)) == 1


def test_a_server_that_refuses_top_k_gets_a_clear_error(server, tiny_model_dir, tmp_path):
    base, _ = server
    cfg = load_config(None, [*_overrides(base, tiny_model_dir), "generate.top_k=50"])
    api.prepare(cfg, tmp_path / "run")
    with pytest.raises(DPSynthError, match=r"set generate\.top_k=0"):
        api.generate(cfg, tmp_path / "run", progress=False)


def test_the_server_gets_the_prompts_the_local_engines_render(tiny_model_dir, tokenizer, monkeypatch):
    """RANDOM_API's messages, rendered with the model's chat template, are exactly the local engines' prompt ids."""
    cfg = load_config(None, _overrides("http://127.0.0.1:9/v1", tiny_model_dir))
    sent: list[list[dict[str, str]]] = []

    class Recorder:
        name = "recorder"

        def complete(self, conversations, settings, *, progress=False, desc=""):
            sent.extend(conversations)
            return ["ok"] * len(conversations)

    model = PEModel(cfg, "You write reviews.", include_title=False)
    model.api = Recorder()
    codes = [{"rating": 1, "category": "Electronics"}, {"rating": 5, "category": "Toys_and_Games"}]
    assert model.random_api(codes, seed=0) == [(None, "ok"), (None, "ok")]
    for conversation, c in zip(sent, codes, strict=True):
        rendered = tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
        ids = tokenizer(str(rendered), add_special_tokens=False)["input_ids"]
        assert ids == encode_prompt(tokenizer, c, "You write reviews.")
    json.dumps(sent)  # plain JSON: what goes over the wire
