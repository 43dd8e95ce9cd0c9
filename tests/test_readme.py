"""The README's commands are the ones CI runs and the ones the CLI accepts."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted((ROOT / "docs").glob("*.md"))


def _code_lines(text: str) -> list[str]:
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def test_ci_runs_the_readme_test_command():
    readme = _code_lines((ROOT / "README.md").read_text(encoding="utf-8"))
    test_commands = [line for line in readme if line.endswith("python -m pytest")]
    assert len(test_commands) == 1, test_commands
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    assert test_commands[0] in [line.strip() for line in ci]


def test_readme_install_pins_torch_first():
    for line in _code_lines((ROOT / "README.md").read_text(encoding="utf-8")):
        if "pip install" in line:
            assert line.startswith("pip install torch==2.13.0 &&"), line


def test_every_documented_command_exists():
    from typer.testing import CliRunner

    from dpsynth.cli import app

    # Commands in the README's bash blocks only: prose lines may begin with the word "dpsynth" too.
    lines = _code_lines((ROOT / "README.md").read_text(encoding="utf-8"))
    documented = {m.group(1) for line in lines if (m := re.match(r"dpsynth (\w+)", line))}
    assert {"run", "prepare", "train", "generate", "budget"} <= documented
    for doc in DOCS:  # the frontier's history keeps its sweeps' commands runnable too
        documented |= {
            m.group(1)
            for line in _code_lines(doc.read_text(encoding="utf-8"))
            if (m := re.match(r"dpsynth (\w+)", line))
        }
    for command in documented:
        result = CliRunner().invoke(app, [command, "--help"])
        assert result.exit_code == 0, f"dpsynth {command} --help failed: {result.output}"


def test_readme_names_the_run_directory_one_way():
    """`--out` everywhere (`--run` stays an alias of it, mentioned as such, but no command is written with it)."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    commands = re.findall(r"dpsynth [a-z]+[^`\n]*", readme)
    assert any("--out" in c for c in commands)
    for doc in DOCS:
        commands += re.findall(r"dpsynth [a-z]+[^`\n]*", doc.read_text(encoding="utf-8"))
    assert [c for c in commands if re.search(r"--run\b", c)] == []
