"""README.ja.md keeps in step with README.md: the same sections in the same order, the same commands."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
EN = (ROOT / "README.md").read_text(encoding="utf-8")
JA = (ROOT / "README.ja.md").read_text(encoding="utf-8")


def sections(text: str) -> list[str]:
    return re.findall(r"^## (.+)$", text, re.MULTILINE)


def commands(text: str) -> list[str]:
    """Every line of every shell block, comments (translated) left out."""
    found = []
    for block in re.findall(r"^[ ]*```bash\n(.*?)^[ ]*```", text, re.MULTILINE | re.DOTALL):
        for line in block.splitlines():
            command = re.sub(r"\s+#.*$", "", line).strip()
            if command and not command.startswith("#"):
                found.append(command)
    return found


def test_the_japanese_readme_has_the_same_sections_in_the_same_order() -> None:
    english = sections(EN)
    named = [re.search(r"<!-- en: (.+?) -->", heading) for heading in sections(JA)]
    assert all(named), "each section of README.ja.md names its English section: ## 見出し <!-- en: Heading -->"
    assert [m.group(1) for m in named if m] == english


def test_the_japanese_readme_gives_the_same_commands() -> None:
    assert commands(EN) and commands(JA) == commands(EN)
    assert "scripts/setup.sh && .venv/bin/python -m pytest -q" in commands(JA)  # the two a newcomer needs


def test_the_japanese_readme_is_japanese() -> None:
    prose = re.sub(r"```.*?```", "", JA, flags=re.DOTALL)
    kana = len(re.findall(r"[\u3040-\u30ff]", prose))
    assert kana > 3000, kana  # written in Japanese, not left in English
