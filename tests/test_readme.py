"""The README as a newcomer follows it: every Python snippet runs, every command line names a command and flags
that exist."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest

from tests.test_cli import cli

README = Path(__file__).resolve().parent.parent / "README.md"


def blocks(language: str) -> list[str]:
    return re.findall(rf"```{language}\n(.*?)```", README.read_text(), flags=re.S)


def command_lines() -> list[str]:
    """Every `edgetam-export ...` line of the README's shell blocks, comments cut off."""
    lines = []
    for block in blocks("bash"):
        for line in block.splitlines():
            line = line.split("  #")[0].strip()
            if line.startswith("edgetam-export "):
                lines.append(line)
    return lines


@cache
def help_text(*command: str) -> str:
    result = cli(*command, "--help")
    assert result.returncode == 0, f"'edgetam-export {' '.join(command)}' does not exist: {result.stderr}"
    return result.stdout


def test_readme_has_snippets():
    assert len(blocks("python")) >= 1 and len(command_lines()) >= 15


@pytest.mark.parametrize("line", command_lines())
def test_every_command_line_uses_existing_commands_and_flags(line):
    words = shlex.split(line)[1:]
    command = words[:2] if words[0] == "bench" else words[:1]
    text = help_text(*command)
    for flag in (w.split("=")[0] for w in words if w.startswith("--")):
        assert re.search(rf"{re.escape(flag)}\b", text), f"{line}: '{flag}' is not an option of {' '.join(command)}"


def test_python_snippets_run(tiny_bundles, data_dir, tmp_path):
    """Run as written, from a folder laid out as the README's commands leave it (models/, data/)."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "edgetam-xnnpack").symlink_to(tiny_bundles["executorch-xnnpack-fp32"].path)
    (tmp_path / "data").symlink_to(data_dir)
    for snippet in blocks("python"):
        result = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, capture_output=True, text=True,
                                timeout=600)
        assert result.returncode == 0, f"{snippet}\n{result.stderr[-2000:]}"
