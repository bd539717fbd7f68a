"""The installed `polycascade` command, run as a user would."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from .conftest import run_cli


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(*args)


def test_help_lists_the_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    assert "models" in result.stdout


def test_models_by_vendor_show_prices_and_jurisdiction() -> None:
    result = run("models", "--vendor", "deepseek", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert rows and all(r["vendor"] == "DeepSeek" and r["jurisdiction"] == "CN" for r in rows)
    chat = next(r for r in rows if r["id"] == "deepseek/deepseek-chat")
    assert float(chat["input_usd_per_mtok"]) > 0


def test_a_broken_models_file_exits_2_with_its_line(tmp_path: Path) -> None:
    f = tmp_path / "m.yaml"
    f.write_text("models:\n  - id: x\n    provider: openai\n    price: {input_per_mtok: -1, output_per_mtok: 1}\n")
    result = run("models", "--models", str(f))
    assert result.returncode == 2
    assert f"{f.name}:4" in result.stderr.replace("\n", "") and "input_per_mtok" in result.stderr


def test_piped_listing_is_one_tab_separated_line_per_model() -> None:
    result = run("models", "--vendor", "deepseek")
    lines = result.stdout.splitlines()
    assert lines[0].split("\t")[:3] == ["model", "vendor", "juris."]
    chat = next(line.split("\t") for line in lines if line.startswith("deepseek/deepseek-chat\t"))
    assert chat[1:3] == ["DeepSeek", "CN"]
