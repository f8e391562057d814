"""The core ``Cascade`` on native openai-SDK rungs, run where LangChain, LangGraph and LlamaIndex
cannot be imported, against the real local LLM server: real logprobs decide, the trace leaves over
OTLP/HTTP to a receiver, and the decision log, the trace and the answer agree on who answered."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, select

from cascade_router.observability.decision_log import requests_table
from tests.otlp_receiver import http_receiver

SCRIPT = Path(__file__).with_name("frameworkless_run.py")
MODES = ("invoke", "stream", "ainvoke", "astream")


@pytest.fixture(scope="module")
def run(local_llm: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    db = tmp_path_factory.mktemp("frameworkless") / "decisions.db"
    with http_receiver() as (base, received):
        done = subprocess.run(
            [sys.executable, str(SCRIPT), local_llm, f"{base}/v1/traces", str(db)],
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-4000:]
        out = json.loads(done.stdout.strip().splitlines()[-1])
        out["spans"] = received.span_list()
    engine = create_engine(f"sqlite:///{db}")
    with engine.connect() as conn:
        out["records"] = {r.request_id: r._asdict() for r in conn.execute(select(requests_table))}
    engine.dispose()
    return out


def test_no_framework_was_loaded(run: dict[str, Any]) -> None:
    assert run["frameworks_loaded"] == []


@pytest.mark.parametrize(("threshold", "answered"), [("0.0", "cheap"), ("1.0", "strong")])
def test_every_mode_gives_the_same_result(run: dict[str, Any], threshold: str, answered: str) -> None:
    results = [run["runs"][f"{threshold}/{mode}"] for mode in MODES]
    assert {r["answered"] for r in results} == {answered}
    expected = ["accept"] if answered == "cheap" else ["escalate", "accept"]
    assert all(r["decisions"] == expected for r in results)
    # A real logprob score, strictly between 0 and 1, decided the first rung.
    first_scores = [r["scores"][0] for r in results if r["scores"][0] is not None]
    assert first_scores
    assert all(0.0 < s < 1.0 for s in first_scores)
    # Greedy decoding: the same answer whether called or streamed, sync or async.
    assert len({r["text"] for r in results}) == 1
    assert results[0]["text"]
    for r in results:
        if "streamed" in r:
            assert r["streamed"] == r["text"]


def test_trace_log_and_answer_agree_on_who_answered(run: dict[str, Any]) -> None:
    workflows = {
        s["trace_id"]: s["attributes"] for s in run["spans"] if s["name"].startswith("invoke_workflow")
    }
    for key, result in run["runs"].items():
        record = run["records"][result["request_id"]]
        span = workflows[result["trace_id"]]
        assert record["trace_id"] == result["trace_id"], key
        assert record["answered_name"] == result["answered"], key
        assert span["cascade.request_id"] == result["request_id"], key
        assert span["cascade.answered_by.rung"] == (0 if result["answered"] == "cheap" else 1), key
        assert span["cascade.answered_by.model"] == "gemma-3-270m", key
        rung_spans = [
            s["attributes"]
            for s in run["spans"]
            if s["trace_id"] == result["trace_id"] and "cascade.decision" in s["attributes"]
        ]
        assert [a["cascade.decision"] for a in sorted(rung_spans, key=lambda a: a["cascade.rung.index"])] == [
            a["decision"] for a in record["attempts"]
        ], key
    assert len(run["records"]) == len(run["runs"]) == 8
