"""API keys, per-key ladders, rate limits and budgets; who may bind what."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from typer.testing import CliRunner

from cascade_router.cli.app import app as cli
from cascade_router.errors import ConfigError
from cascade_router.server import KeyStore, build_state, load_server_config
from cascade_router.server.keys import key_hash
from cascade_router.server.run import check_exposure, is_loopback
from cascade_router.shared_state import RedisStore
from cascade_router.testing import ScriptedBackend
from tests.server.live import serving

MESSAGES = [{"role": "user", "content": "hello there"}]
PRICE = {"input_per_mtok": 1000.0, "output_per_mtok": 1000.0}


def config(keys: Path, **settings: Any) -> dict[str, Any]:
    def rung(name: str) -> dict[str, Any]:
        return {
            "name": name,
            "model": {"provider": "scripted", "model": name, "replies": ["hi"], "max_tokens": 10},
            "price": PRICE,
        }

    return {
        "keys": str(keys),
        "key_cache_s": 0.0,
        **settings,
        "ladders": {"bot": {"rungs": [rung("bot-model")]}, "other": {"rungs": [rung("other-model")]}},
    }


def post(url: str, key: str | None, model: str = "bot") -> httpx.Response:
    headers = {"authorization": f"Bearer {key}"} if key is not None else {}
    return httpx.post(
        f"{url}/v1/chat/completions", json={"model": model, "messages": MESSAGES}, headers=headers, timeout=30
    )


def test_keys_are_stored_hashed_and_checked(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    key, record = store.create("alice", ladders=("bot",))
    assert key.startswith("cr-")
    assert len(key) > 40
    assert key not in (tmp_path / "keys.db").read_bytes().decode(errors="replace")
    assert key_hash(key) in (tmp_path / "keys.db").read_bytes().decode(errors="replace")
    assert store.check(key) == record
    assert store.check(key + "x") is None
    store.revoke(record.id)
    assert store.check(key) is None  # the cache is cleared on revocation in this process
    assert [k.id for k in store.list()] == []
    assert [k.id for k in store.list(include_revoked=True)] == [record.id]
    with pytest.raises(ConfigError, match="no key"):
        store.revoke("nope")
    with pytest.raises(ConfigError, match="rpm"):
        store.create("bob", rpm=0)


def test_requests_need_a_valid_key_for_an_allowed_ladder(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    key, record = store.create("alice", ladders=("bot",))
    with serving(config(tmp_path / "keys.db")) as server:
        missing = post(server.url, None)
        assert missing.status_code == 401
        assert missing.json()["error"]["code"] == "invalid_api_key"
        wrong = post(server.url, "cr-wrong")
        assert wrong.status_code == 401
        assert "cr-wrong" not in wrong.text
        assert post(server.url, key).status_code == 200
        hidden = post(server.url, key, model="other")
        assert hidden.status_code == 404  # not allowed looks like not there
        c = openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0)
        assert [m.id for m in c.models.list()] == ["bot"]
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=f"{server.url}/v1", api_key="cr-bad", max_retries=0).models.list()
        store.revoke(record.id)  # another process's revocation (key_cache_s is 0 here)
        assert post(server.url, key).status_code == 401


def test_rate_limit_is_429_with_retry_after(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    key, _ = store.create("alice", rpm=3)
    with serving(config(tmp_path / "keys.db")) as server:
        _wait_for_room_in_the_minute()
        codes = [post(server.url, key).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        over = post(server.url, key)
        assert over.json()["error"]["code"] == "rate_limit_exceeded"
        assert 1 <= int(over.headers["retry-after"]) <= 60
        with pytest.raises(openai.RateLimitError):
            openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0).chat.completions.create(
                model="bot",
                messages=MESSAGES,  # type: ignore[arg-type]
            )


def test_budget_is_429_insufficient_quota_and_never_overspent(tmp_path: Path) -> None:
    store = KeyStore(tmp_path / "keys.db")
    key, _ = store.create("alice", budget_usd=0.1)
    with serving(config(tmp_path / "keys.db")) as server:
        spent = 0.0
        codes = []
        for _ in range(30):
            response = post(server.url, key)
            codes.append(response.status_code)
            if response.status_code == 200:
                spent += float(response.headers["x-cascade-cost-usd"])
            else:
                assert response.status_code == 429
                assert response.json()["error"]["code"] == "insufficient_quota"
                # the day's budget starts again at midnight UTC
                assert 1 <= int(response.headers["retry-after"]) <= 86_400
        assert 200 in codes
        assert 429 in codes
        assert spent <= 0.1
        assert codes.index(429) == codes.count(200)  # once refused, refused after


def _wait_for_room_in_the_minute(seconds: float = 8.0) -> None:
    """Rate limits count per calendar minute: start where the minute will not turn mid-test."""
    left = 60 - time.time() % 60
    if left < seconds:
        time.sleep(left + 0.1)


def test_no_keys_binds_loopback_only_unless_insecure() -> None:
    cfg = load_server_config({"ladders": {"b": {"rungs": [{"model": ScriptedBackend("m", ["x"])}]}}})
    assert "loopback" in check_exposure(cfg, "127.0.0.1", insecure_no_auth=False)
    assert is_loopback("::1")
    assert is_loopback("localhost")
    assert not is_loopback("0.0.0.0")
    with pytest.raises(ConfigError, match="--insecure-no-auth"):
        check_exposure(cfg, "0.0.0.0", insecure_no_auth=False)
    assert "WARNING" in check_exposure(cfg, "0.0.0.0", insecure_no_auth=True)


def test_serve_refuses_a_public_address_without_keys(tmp_path: Path) -> None:
    (tmp_path / "ladder.yaml").write_text("name: bot\nrungs:\n  - model: {provider: scripted, model: m}\n")
    result = CliRunner().invoke(
        cli, ["serve", "--config", str(tmp_path / "ladder.yaml"), "--host", "0.0.0.0"]
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError)
    assert "--insecure-no-auth" in str(result.exception)


def test_keys_cli_create_list_revoke(tmp_path: Path) -> None:
    db = str(tmp_path / "keys.db")
    runner = CliRunner()
    made = runner.invoke(
        cli, ["keys", "create", "--store", db, "--name", "ci", "--ladder", "bot", "--rpm", "5"]
    )
    assert made.exit_code == 0, made.output
    key = made.stdout.strip().splitlines()[0]
    assert key.startswith("cr-")
    listed = runner.invoke(cli, ["keys", "list", "--store", db, "--json"])
    assert listed.exit_code == 0
    assert key not in listed.stdout
    assert '"rpm": 5' in listed.stdout
    record = KeyStore(db).check(key)
    assert record is not None
    revoked = runner.invoke(cli, ["keys", "revoke", record.id, "--store", db])
    assert revoked.exit_code == 0
    assert KeyStore(db).check(key) is None


def test_the_shared_state_reaches_breakers_and_budget_rules(tmp_path: Path, redis_url: str) -> None:
    ladder = {
        "circuit_breaker": {"failures": 3},
        "routing": [{"kind": "budget", "key": "tenant", "usd": 5}],
        "rungs": [{"model": {"provider": "scripted", "model": "m"}}],
    }
    state = build_state({"state": redis_url, "keys": str(tmp_path / "k.db"), "ladders": {"b": ladder}})
    engine = state.ladders["b"].cascade.engine
    assert engine.breakers is not None
    assert isinstance(engine.breakers.store, RedisStore)
    router = engine.router
    assert router is not None
    kinds = [(r.kind, type(r._store).__name__) for r in router.rules]  # type: ignore[attr-defined]
    assert kinds == [("budget", "RedisStore"), ("key_budget", "RedisStore")]


def test_replicas_pool_their_rung_latencies(redis_url: str) -> None:
    """Two servers on one Redis: the deadline rule and hedging of each estimate from both's
    observed latencies."""
    from cascade_router.server.app import latency_windows, share_latencies

    ladder = {
        "routing": [{"kind": "deadline"}],
        "hedge": {"min_samples": 1},
        "rungs": [
            {
                "model": {"provider": "scripted", "model": "a"},
                "scorer": {"kind": "logprob"},
                "threshold": 0.5,
            },
            {"model": {"provider": "scripted", "model": "b"}},
        ],
    }
    config = {"state": redis_url, "ladders": {"pooled": ladder}}
    one, two = build_state(config), build_state(config)
    RedisStore(redis_url).delete("latency:pooled:routing:0", "latency:pooled:hedge:0")
    windows_one, windows_two = dict(latency_windows(one)), dict(latency_windows(two))
    assert set(windows_one) == {"latency:pooled:routing", "latency:pooled:hedge"}
    for seconds in (0.1, 0.2, 0.3):
        windows_one["latency:pooled:routing"].observe(0, seconds)
    windows_two["latency:pooled:routing"].observe(0, 0.9)
    share_latencies(one)
    share_latencies(two)
    share_latencies(one)
    for state in (one, two):
        window = dict(latency_windows(state))["latency:pooled:routing"]
        found = window.quantile(0, 1.0)
        assert found == (0.9, 4)  # all four observations, from both
    # an unreachable store leaves each process its own window, and says so
    broken = build_state({"state": "redis://127.0.0.1:1/0", "ladders": {"pooled": ladder}})
    own = dict(latency_windows(broken))["latency:pooled:routing"]
    own.observe(0, 0.5)
    share_latencies(broken)
    assert own.quantile(0, 1.0) == (0.5, 1)


def test_an_unreachable_key_store_is_503_not_a_crash() -> None:
    config = {
        "keys": "postgresql+psycopg://cascade:wrong@127.0.0.1:1/none",
        "ladders": {"bot": {"rungs": [{"model": {"provider": "scripted", "model": "m"}}]}},
    }
    with serving(config) as server:
        response = post(server.url, "cr-whatever")
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "key_store_unavailable"
        assert "wrong" not in response.text
        assert httpx.get(f"{server.url}/readyz", timeout=10).status_code == 503


def test_seconds_to_the_next_budget_period() -> None:
    from datetime import UTC, datetime

    from cascade_router.server.limits import seconds_to_next_period

    t = datetime(2026, 2, 28, 23, 59, 30, tzinfo=UTC).timestamp()
    assert seconds_to_next_period("hour", t) == 30
    assert seconds_to_next_period("day", t) == 30
    assert seconds_to_next_period("month", t) == 30
    early = datetime(2026, 1, 31, 0, 0, 0, tzinfo=UTC).timestamp()
    assert seconds_to_next_period("day", early) == 86_400
    assert seconds_to_next_period("month", early) == 86_400


def test_keys_create_checks_the_ladders_against_the_config(tmp_path: Path) -> None:
    server_config = tmp_path / "server.yaml"
    server_config.write_text(
        f"keys: {tmp_path / 'keys.db'}\n"
        "ladders:\n  bot:\n    rungs:\n      - model: {provider: scripted, model: m}\n"
    )
    result = CliRunner().invoke(
        cli, ["keys", "create", "--config", str(server_config), "--name", "x", "--ladder", "bott"]
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError)
    assert "bott: not a ladder" in str(result.exception)
    made = CliRunner().invoke(
        cli, ["keys", "create", "--config", str(server_config), "--name", "x", "--ladder", "bot"]
    )
    assert made.exit_code == 0, made.output


def test_keys_work_without_the_server_extra(tmp_path: Path) -> None:
    """An admin machine manages keys with the core alone; serve says which extra it lacks."""
    import subprocess
    import sys

    code = (
        "import sys\n"
        "for name in ('starlette', 'uvicorn', 'orjson', 'prometheus_client'):\n"
        "    sys.modules[name] = None  # as if not installed\n"
        "from typer.testing import CliRunner\n"
        "from cascade_router.cli.app import app\n"
        f"store = {str(tmp_path / 'k.db')!r}\n"
        "made = CliRunner().invoke(app, ['keys', 'create', '--store', store, '--name', 'a'])\n"
        "assert made.exit_code == 0, made.output\n"
        f"served = CliRunner().invoke(app, ['serve', '--config', {str(tmp_path / 'none.yaml')!r}])\n"
        "assert served.exit_code != 0\n"
        "assert 'server extra' in served.output, served.output\n"
        "print('ok')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
