"""Documents, chunking, and `polycascade run`: results, reruns, broken files, budgets, kill -9."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from polycascade import ConfigError
from polycascade.catalog import ModelsFile
from polycascade.testing import ScriptedRequest, ScriptedServer
from polycascade.tools.chunking import chunk_text, sentences
from polycascade.tools.documents import BrokenDocument, Document, discover, load

from .conftest import POLYCASCADE, run_cli

SAMPLES = Path(__file__).parents[1] / "examples" / "documents"


def minimal_pdf(text: str) -> bytes:
    """A one-page PDF with `text` in Helvetica, assembled by hand (no PDF writer needed)."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length %d >>\nstream\n" % len(stream) + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out, offsets = b"%PDF-1.4\n", []
    for n, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % n + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    return out + b"trailer\n<< /Size %d /Root 1 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, xref)


def test_every_format_loads_and_broken_files_become_records(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("Plain text.")
    (tmp_path / "b.md").write_text("# Title\n\nMarkdown.")
    (tmp_path / "c.html").write_text("<p>Hello <b>world</b></p><script>evil()</script>")
    (tmp_path / "d.pdf").write_bytes(minimal_pdf("Quarterly revenue rose"))
    (tmp_path / "e.jsonl").write_text('{"id": "x", "text": "One"}\n{"id": "y", "body": "Two"}\n{"id": "z"}\n')
    (tmp_path / "f.csv").write_text("id,text\n1,Row one\n")
    (tmp_path / "g.txt").write_bytes("東京の天気は晴れです。".encode("cp932"))  # Shift_JIS
    (tmp_path / "h.txt").write_bytes(b"\x00\x01binary")
    (tmp_path / "i.pdf").write_bytes(b"%PDF-1.4 broken")
    docs = {d.id: d for p in discover(tmp_path) for d in load(p, tmp_path)}
    text = {k: d.text for k, d in docs.items() if isinstance(d, Document)}
    assert text["c.html"] == "Hello world" and "evil" not in text["c.html"]
    assert "Quarterly revenue rose" in text["d.pdf"]
    assert text["e.jsonl#x"] == "One" and text["e.jsonl#y"] == "Two" and text["f.csv#1"] == "Row one"
    assert text["g.txt"] == "東京の天気は晴れです。"
    broken = {k: d.error for k, d in docs.items() if isinstance(d, BrokenDocument)}
    assert set(broken) == {"e.jsonl#z", "h.txt", "i.pdf"} and "binary" in broken["h.txt"]
    assert broken["e.jsonl#z"] == "e.jsonl:3: no text/content/body/document field"  # the file's own line
    assert (docs["e.jsonl#y"].key, docs["f.csv#1"].key, docs["a.txt"].key) == ("e.jsonl:2", "f.csv:2", "a.txt")


def test_a_huge_document_is_refused_not_loaded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("polycascade.tools.documents.MAX_BYTES", 1000)
    (tmp_path / "big.txt").write_text("x" * 5000)
    [doc] = load(tmp_path / "big.txt")
    assert isinstance(doc, BrokenDocument) and "too large" in doc.error


def test_an_empty_folder_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no documents"):
        discover(tmp_path)


def test_chunks_split_japanese_at_sentence_ends_without_spaces() -> None:
    text = "売上は前年比12%増えました。利益も改善しました！来期はどうなるでしょうか？ Revenue grew. Costs fell."
    assert sentences(text) == ["売上は前年比12%増えました。", "利益も改善しました！", "来期はどうなるでしょうか？",
                               "Revenue grew.", "Costs fell."]  # fmt: skip
    long = "東京は日本の首都です。" * 300
    chunks = chunk_text(long, 100)
    assert len(chunks) > 5 and "".join(chunks) == long
    assert all(c.endswith("。") for c in chunks)  # every cut at a sentence end


class Vendors:
    """Two scripted vendors answering summaries; `latency` slows them for the kill test."""

    def __init__(self, latency: float = 0.0) -> None:
        self.server = ScriptedServer(self.respond, latency_s=latency).start()

    def respond(self, req: ScriptedRequest) -> str:
        if "SCORE: n" in req.prompt:
            return "SCORE: 9"
        if '"customer"' in (req.messages[0].get("content") or ""):
            return '{"customer": "Northwind", "units": 100}'
        return f"Summary of: {req.prompt.split('<text>')[-1].strip()[:30]}"

    def models_yaml(self, path: Path) -> Path:
        cheap = {"vendor": "DeepSeek", "jurisdiction": "CN", "input_per_mtok": "0.2", "output_per_mtok": "0.4"}
        judge = {"vendor": "OpenAI", "jurisdiction": "US", "input_per_mtok": "1", "output_per_mtok": "2"}
        models = [
            self.server.model("v/cheap", **cheap, quality=0.7, capabilities=["json_schema"]),  # type: ignore[arg-type]
            self.server.model("v/judge", **judge, quality=0.9),  # type: ignore[arg-type]
        ]
        return ModelsFile(models=models).write(path)


@pytest.fixture
def vendors() -> Iterator[Vendors]:
    v = Vendors()
    yield v
    v.server.stop()


def documents(folder: Path, n: int, sentences_each: int = 1) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        body = " ".join(
            f"Document {i} sentence {j} says something long enough to matter." for j in range(sentences_each)
        )
        (folder / f"doc{i:03d}.txt").write_text(body)
    return folder


def run(tmp: Path, models: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("run", "summarise", "--models", str(models), "--no-local", "--no-progress",
                   "--ledger", str(tmp / "ledger.db"), *args, cwd=tmp)  # fmt: skip


def lines(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.read_text().splitlines()]


def test_run_writes_a_line_per_document_and_a_rerun_skips_them(vendors: Vendors, tmp_path: Path) -> None:
    folder = documents(tmp_path / "in", 6)
    (folder / "broken.txt").write_bytes(b"\x00binary")
    out = tmp_path / "out" / "results.jsonl"
    first = run(tmp_path, vendors.models_yaml(tmp_path / "m.yaml"), "--input", str(folder), "--out", str(out))
    assert first.returncode == 0, first.stderr
    results = {r["id"]: r for r in lines(out)}
    assert len(results) == 7 and results["broken.txt"]["status"] == "error"
    ok = results["doc003.txt"]
    assert ok["status"] == "verified" and ok["summary"].startswith("Summary of: Document 3")
    assert ok["models"] == ["v/cheap"] and float(str(ok["cost_usd"])) > 0
    report = json.loads((out.parent / "results.report.json").read_text())
    assert report["scope"]["run_id"].startswith("run:results:")
    assert {row["vendor"] for row in report["by_vendor"]} == {"DeepSeek", "OpenAI"}  # answers, and their judge
    assert "polycascade report --run" in first.stderr and "results.report.json" in first.stderr
    calls = vendors.server.count()
    again = run(tmp_path, vendors.models_yaml(tmp_path / "m.yaml"), "--input", str(folder), "--out", str(out))
    assert again.returncode == 0 and "7 already done" in again.stderr
    assert vendors.server.count() == calls and len(lines(out)) == 7


def test_budget_exhaustion_stops_cleanly_and_a_rerun_continues(vendors: Vendors, tmp_path: Path) -> None:
    folder = documents(tmp_path / "in", 12)
    out, models = tmp_path / "r.jsonl", vendors.models_yaml(tmp_path / "m.yaml")
    stopped = run(
        tmp_path, models, "--input", str(folder), "--out", str(out), "--budget", "0.00015", "--concurrency", "1"
    )
    assert stopped.returncode == 4 and "stopped early" in stopped.stderr and "budget 'run'" in stopped.stderr
    partial = len(lines(out))
    assert 0 < partial < 12
    spent = sqlite3.connect(tmp_path / "ledger.db").execute("SELECT SUM(cost_pico) FROM calls").fetchone()[0]
    assert spent / 1e12 <= 0.00015
    resumed = run(tmp_path, models, "--input", str(folder), "--out", str(out), "--budget", "1")
    assert resumed.returncode == 0 and len(lines(out)) == 12


def test_the_extract_workflow_validates_against_a_schema(vendors: Vendors, tmp_path: Path) -> None:
    (tmp_path / "schemas.py").write_text(
        "from pydantic import BaseModel\nclass Ticket(BaseModel):\n    customer: str\n    units: int\n"
    )
    folder = documents(tmp_path / "in", 2)
    out = tmp_path / "x.jsonl"
    models = vendors.models_yaml(tmp_path / "m.yaml")
    result = run_cli("run", "extract", "--schema", "schemas:Ticket", "--models", str(models), "--no-local",
                     "--no-progress", "--input", str(folder), "--out", str(out), cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert lines(out)[0]["extracted"] == {"customer": "Northwind", "units": 100}


def test_kill_9_midway_then_rerun_completes_each_document_once_without_repaying(tmp_path: Path) -> None:
    slow = Vendors(latency=0.15)
    try:
        folder = documents(tmp_path / "in", 16, sentences_each=40)  # several chunks per document
        out, models = tmp_path / "k.jsonl", slow.models_yaml(tmp_path / "m.yaml")
        args = [POLYCASCADE, "run", "summarise", "--input", str(folder), "--out", str(out), "--models", str(models),
                "--no-local", "--no-progress", "--ledger", str(tmp_path / "ledger.db"), "--concurrency", "2",
                "--chunk-tokens", "120"]  # fmt: skip
        victim = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while slow.server.count() < 25 and time.monotonic() < deadline:
            time.sleep(0.05)
        killed_at = time.time()
        os.kill(victim.pid, signal.SIGKILL)
        victim.wait()
        # requests that reached the server within one latency of the kill had no answer back yet
        in_flight = sum(1 for r in slow.server.requests if r.at > killed_at - 0.15 - 0.05)
        before = len(lines(out)) if out.exists() else 0
        assert before < 16, "the run finished before it could be killed"
        ledger = sqlite3.connect(tmp_path / "ledger.db")
        lost = ledger.execute("SELECT COUNT(*), MIN(cost_pico) FROM calls WHERE outcome = 'in_flight'").fetchone()
        # every request without an answer at the kill left its reservation on record, counted at its cost
        assert lost[0] >= in_flight and (lost[0] == 0 or lost[1] > 0), (lost, in_flight)
        finished = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert finished.returncode == 0, finished.stderr
        ids = [r["id"] for r in lines(out)]
        assert sorted(ids) == sorted(f"doc{i:03d}.txt" for i in range(16)) and len(ids) == len(set(ids))
        requests = Counter(r.prompt for r in slow.server.requests)
        repeated = sum(n - 1 for n in requests.values())
        assert repeated <= lost[0], f"{repeated} requests paid twice; only the {lost[0]} in flight at the kill may be"
        twice = ledger.execute(
            "SELECT task_id, node, model, COUNT(*) FROM calls WHERE outcome = 'ok' GROUP BY task_id, node, model "
            "HAVING COUNT(*) > 1"
        ).fetchall()
        assert twice == [], f"calls recorded as answered were made again on resume: {twice}"
        assert ledger.execute("SELECT COUNT(*) FROM calls WHERE outcome = 'in_flight'").fetchone()[0] == lost[0]
        assert requests, "no chunk was ever requested"
    finally:
        slow.server.stop()


async def test_checkpoints_written_inline_resume_langgraphs_own_files_and_are_read_back(tmp_path: Path) -> None:
    from typing import TypedDict

    from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
    from langgraph.graph import END, START, StateGraph

    from polycascade._checkpoints import open_checkpoints

    class Count(TypedDict):
        n: int

    def build(saver: object) -> object:
        graph = StateGraph(Count)
        graph.add_node("step", lambda state: {"n": state["n"] + 1})
        graph.add_edge(START, "step")
        graph.add_edge("step", END)
        return graph.compile(checkpointer=saver)

    db, config = tmp_path / "c.db", {"configurable": {"thread_id": "doc-1"}}
    async with AsyncSqliteSaver.from_conn_string(str(db)) as langgraphs:  # a file from an earlier version
        await build(langgraphs).ainvoke({"n": 1}, config)  # type: ignore[attr-defined]
    with open_checkpoints(db) as inline:
        graph = build(inline)
        assert (await graph.aget_state(config)).values == {"n": 2}  # type: ignore[attr-defined]
        assert (await graph.ainvoke({"n": 10}, config))["n"] == 11  # type: ignore[attr-defined]
        history = [s.values async for s in graph.aget_state_history(config)]  # type: ignore[attr-defined]
        assert history[0] == {"n": 11} and {"n": 2} in history
        assert await inline.aget_tuple({"configurable": {"thread_id": "never"}}) is None
    async with AsyncSqliteSaver.from_conn_string(str(db)) as langgraphs:  # and LangGraph's saver reads ours
        assert (await build(langgraphs).aget_state(config)).values == {"n": 11}  # type: ignore[attr-defined]


def test_the_samples_include_japanese_documents() -> None:
    docs = [d for p in discover(SAMPLES) for d in load(p, SAMPLES) if isinstance(d, Document)]
    japanese = [d for d in docs if any("\u3040" <= ch <= "\u30ff" for ch in d.text)]
    assert len(docs) >= 10 and len(japanese) >= 4
