"""Real servers for the server tests: the app under uvicorn in a thread (to look inside it),
or ``cascade-router serve`` as its own process (to test what users run)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
import yaml

from cascade_router.server import ServerState, build_state, create_app


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_healthy(url: str, *, seconds: float = 30.0, process: subprocess.Popen[bytes] | None = None) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server exited with {process.returncode}")
        try:
            if httpx.get(f"{url}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} did not become healthy within {seconds} s")


class InThread:
    """The app served by uvicorn on a thread of this process."""

    def __init__(self, state: ServerState) -> None:
        self.state = state
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(state), host="127.0.0.1", port=self.port, log_level="warning", ws="none", lifespan="on"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> InThread:
        self.thread.start()
        wait_healthy(self.url)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@contextmanager
def serving(config: Mapping[str, Any] | ServerState) -> Iterator[InThread]:
    state = config if isinstance(config, ServerState) else build_state(config)
    with InThread(state) as server:
        yield server


class Process:
    """``cascade-router serve`` as its own process, stopped with SIGTERM."""

    def __init__(
        self, config: Path, *, args: tuple[str, ...] = (), env: Mapping[str, str] | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = config.with_name(f"server-{self.port}.log")
        command = [sys.executable, "-m", "cascade_router.cli", "serve", "--config", str(config)]
        command += ["--port", str(self.port), "--log-level", "warning", *args]
        with self.log.open("wb") as out:  # the child keeps its own copy of the file
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
            )

    def __enter__(self) -> Process:
        try:
            wait_healthy(self.url, process=self.process)
        except RuntimeError:
            self.stop()
            raise RuntimeError(f"the server did not start: {self.output()}") from None
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def write_config(path: Path, config: Mapping[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(dict(config), sort_keys=False))
    return path
