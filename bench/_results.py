"""Each bench script owns one section of bench/RESULTS.md and rewrites only that section."""

from __future__ import annotations

import datetime as dt
import os
import platform
import re
import sys
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).with_name("RESULTS.md")
HEADER = (
    "# Benchmark results\n\n"
    "Written by the scripts in `bench/` (each rewrites its own section). Every figure is measured\n"
    "beside a baseline in the same run, on the machine named in its section.\n"
)


def machine() -> str:
    today = dt.date.today().isoformat()
    return f"{os.cpu_count()} cores, {platform.machine()}, Python {platform.python_version()}, {today}"


def write_section(name: str, body: str) -> None:
    text = RESULTS.read_text() if RESULTS.exists() else HEADER
    block = f"<!-- bench:{name} -->\n{body.strip()}\n<!-- /bench:{name} -->"
    pattern = re.compile(rf"<!-- bench:{re.escape(name)} -->.*?<!-- /bench:{re.escape(name)} -->", re.DOTALL)
    text = pattern.sub(lambda _: block, text) if pattern.search(text) else f"{text.rstrip()}\n\n{block}\n"
    RESULTS.write_text(text)


def publish(name: str, title: str, sections: dict[str, Callable[[], list[str]]]) -> int:
    """Measure each section in order, then write them as one section of RESULTS.md and print it.

    A figure that cannot be measured fails the benchmark (exit 1); a missed target does not.
    """
    lines = [f"## {title}", "", f"Machine: {machine()}."]
    try:
        for heading, measure in sections.items():
            lines += ["", f"### {heading}", "", *measure()]
    except Exception as exc:
        print(f"benchmark failed: {exc!r}", file=sys.stderr)
        return 1
    body = "\n".join(lines)
    write_section(name, body)
    print(body)
    return 0
