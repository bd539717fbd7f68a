"""The wheel installs one name, `polycascade`: the repository's agents/, graphs/, tools/, policies/
and backtest/ go in as polycascade.agents, …, and clobber nobody's package (the OpenAI Agents SDK's
is also called `agents`)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".venv", ".git", "*.egg-info", "build", "dist", "__pycache__", "*cache", "out", "*.db*")


def _wheel(tmp: Path) -> Path:
    source = tmp / "source"
    shutil.copytree(ROOT, source, symlinks=True, ignore=SKIP)  # as a fresh clone has it: links included
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp), str(source)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert built.returncode == 0, built.stderr
    return next(tmp.glob("polycascade-*.whl"))


def test_the_wheel_holds_one_top_level_name_and_installs_beside_openai_agents(tmp_path: Path) -> None:
    wheel = _wheel(tmp_path)
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/")[0] for n in names if not n.split("/")[0].endswith((".dist-info", ".data"))}
    assert tops == {"polycascade"}
    for module in ("agents/chat_model.py", "graphs/cascade.py", "tools/documents.py", "policies/routing.py",
                   "backtest/replay.py", "policies/presets/jp-enterprise.yaml", "data/vendors.yaml",
                   "data/report.js", "data/report.css", "data/labels.yaml"):  # fmt: skip
        assert f"polycascade/{module}" in names, module

    site = tmp_path / "site"  # a folder of installed packages, as site-packages is
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-index", "--target", str(site), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stderr
    packages = {p.name for p in site.iterdir()} - {"bin"}  # bin/: the `polycascade` command
    assert packages == {"polycascade", wheel.name.split("-py3")[0] + ".dist-info"}

    both = subprocess.run(
        [sys.executable, "-c", _BOTH.format(site=str(site))],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site), "LITELLM_LOCAL_MODEL_COST_MAP": "True"},
    )  # fmt: skip
    assert both.returncode == 0, both.stderr
    assert both.stdout.split() == ["openai-agents:", "ok", "polycascade:", "ok"]


_BOTH = """
import agents, polycascade
from agents import Agent                                  # the OpenAI Agents SDK, untouched
from polycascade.agents.chat_model import PolycascadeChat  # ours, under our name
from polycascade.policies.config import load_policy
assert "site-packages" in agents.__file__, agents.__file__
assert polycascade.__file__.startswith({site!r}), polycascade.__file__
assert load_policy("jp-enterprise").policy.name == "jp-enterprise"  # presets ship as package data
print("openai-agents:", "ok" if Agent(name="a").name == "a" else "broken")
print("polycascade:", "ok" if PolycascadeChat(models=["gpt-4o-mini"]).model_name else "broken")
"""
