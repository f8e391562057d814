"""Serve a ladder as an OpenAI-compatible API and call it with the official openai client.

The ladder's rungs are scripted here (no key needed); swap in `{provider: openai, model: ...}`
rungs for real ones. Runs offline:

    python examples/openai_server.py
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from openai import OpenAI

CONFIG = """
ladders:
  support-bot:
    rungs:
      - name: cheap
        model:
          provider: scripted
          model: cheap-model
          replies: [{text: "Paris.", confidence: 0.95}, {text: "Lyon?", confidence: 0.3}]
        scorer: {kind: logprob}
        threshold: 0.6
      - name: strong
        model: {provider: scripted, model: strong-model, replies: ["Paris, the capital of France."]}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    folder = Path(tempfile.mkdtemp())
    (folder / "server.yaml").write_text(CONFIG)
    port = free_port()
    command = [sys.executable, "-m", "cascade_router.cli", "serve", "--config", str(folder / "server.yaml")]
    server = subprocess.Popen([*command, "--port", str(port), "--log-level", "warning"])
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.05)
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="any key: none are configured")
        for _ in range(2):  # the cheap rung is sure the first time, unsure the second
            raw = client.chat.completions.with_raw_response.create(
                model="support-bot", messages=[{"role": "user", "content": "What is the capital of France?"}]
            )
            answer = raw.parse()
            print(
                f"{answer.choices[0].message.content!r} from {answer.model} "
                f"after {raw.headers['x-cascade-escalations']} escalation(s)"
            )
        stream = client.chat.completions.create(
            model="support-bot", messages=[{"role": "user", "content": "And of Italy?"}], stream=True
        )
        print("streamed:", "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices))
    finally:
        server.send_signal(signal.SIGTERM)  # requests in flight finish, the log is flushed
        server.wait(timeout=60)


if __name__ == "__main__":
    main()
