"""Every Python block in README.md and docs/ runs as written (issue 11).

Each block runs on its own, in a fresh interpreter in an empty folder. A block that needs
something this machine does not have says so in an HTML comment on the line before it:

    <!-- needs: OPENAI_API_KEY, ANTHROPIC_API_KEY -->

A block that needs the local LLM server runs against the test session's (the same code, with
the server's URL). Any other such block still runs, with fake keys and the providers' base URLs
pointed at a closed port on loopback: it may fail only because it reached no provider (a
connection or authentication error, or a cascade whose every rung failed that way). A missing
import, a renamed argument or any other error fails the test, so the docs cannot rot.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"(?:<!-- needs: (?P<needs>[^>]*?) -->\n)?```python\n(?P<code>.*?)```", re.S)
NO_PROVIDER = {
    "APIConnectionError",
    "AuthenticationError",
    "ConnectError",
    "ConnectionRefusedError",
    "CascadeExhaustedError",  # every rung failed; its sub-exceptions are checked too
}
EXCEPTION = re.compile(r"^[\s|+]*([A-Za-z_][\w.]*(?:Error|Exception|Group)): ", re.M)
LOCAL_URL = "http://127.0.0.1:8177/v1"  # scripts/local_llm.py serve
SERVER_URL = "http://127.0.0.1:8000/v1"  # cascade-router serve's default address
CLOSED = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused


def _no_provider(name: str) -> bool:
    # The providers' and the frameworks' own wrappers (OpenAIConnectionError...) included.
    return name in NO_PROVIDER or name.endswith(("ConnectionError", "ConnectError"))


def _blocks() -> list[tuple[str, str | None, str]]:
    found = []
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        for match in BLOCK.finditer(text):
            line = text[: match.start("code")].count("\n")
            found.append((f"{page.relative_to(ROOT)}:{line}", match.group("needs"), match.group("code")))
    return found


BLOCKS = _blocks()


@pytest.fixture(scope="module")
def doc_server() -> Iterator[str]:
    """A cascade server like the docs' (a "support-bot" ladder), with scripted rungs."""
    from cascade_router.testing import Reply
    from tests.server.live import serving

    cheap = {
        "provider": "scripted",
        "model": "cheap-model",
        "replies": [{"text": "Paris.", "confidence": 0.9}],
    }
    strong = {"provider": "scripted", "model": "strong-model", "replies": [Reply("Paris, France.")]}
    ladder = {"rungs": [{"model": cheap, "scorer": {"kind": "logprob"}, "threshold": 0.5}, {"model": strong}]}
    with serving({"ladders": {"support-bot": ladder}}) as server:
        yield server.url


def test_the_docs_have_python_blocks() -> None:
    assert len(BLOCKS) >= 8


@pytest.mark.parametrize(("where", "needs", "code"), BLOCKS, ids=[b[0] for b in BLOCKS])
def test_a_doc_block_runs_as_written(
    where: str, needs: str | None, code: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    local = needs is not None and "local LLM server" in needs
    if local:
        # Runs for real against the test session's server (its port is a free one).
        code = code.replace(LOCAL_URL, request.getfixturevalue("local_llm"))
    if needs is not None and "cascade-router serve" in needs:
        # Runs for real against a cascade server serving a scripted "support-bot" ladder.
        server = request.getfixturevalue("doc_server")
        code = code.replace(SERVER_URL, f"{server}/v1")
        local = True  # nothing may fail: everything it needs is here
    env = {
        **os.environ,
        "OPENAI_API_KEY": "sk-doc-test-not-a-key",
        "OPENAI_BASE_URL": f"{CLOSED}/v1",
        "ANTHROPIC_API_KEY": "sk-ant-doc-test-not-a-key",
        "ANTHROPIC_BASE_URL": CLOSED,
        "OTEL_EXPORTER_OTLP_ENDPOINT": CLOSED,
        "PYTHONWARNINGS": "ignore",
    }
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if done.returncode == 0:
        return
    assert not local, f"{where} failed against the local LLM server:\n{done.stderr[-3000:]}"
    assert needs, f"{where} failed as written:\n{done.stderr[-3000:]}"
    # Every exception in the traceback (causes and an exhausted cascade's sub-exceptions
    # included) must be one of reaching no provider.
    raised = set(EXCEPTION.findall(done.stderr))
    assert raised, f"{where}: no exception in its output:\n{done.stderr[-3000:]}"
    other = {name for name in raised if not _no_provider(name.rsplit(".", 1)[-1])}
    assert not other, (
        f"{where} (needs {needs}) failed for another reason, {sorted(other)}:\n{done.stderr[-3000:]}"
    )
