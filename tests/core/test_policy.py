"""The escalation policy, by unit cases and by a property over random ladders."""

from __future__ import annotations

import asyncio

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cascade_router import Cascade, CascadeExhaustedError, Price
from cascade_router.testing import Reply, ScriptedBackend
from tests.core.helpers import ScriptedScore

rung_strategy = st.tuples(
    st.booleans(),  # raises
    st.floats(0, 1),  # score
    st.floats(0, 1),  # threshold
    st.integers(1, 500),  # input tokens
    st.integers(1, 500),  # output tokens
    st.floats(0, 50),  # $ per 1M tokens
)


def build(
    spec: list[tuple[bool, float, float, int, int, float]], **kwargs: object
) -> tuple[Cascade, list[ScriptedBackend]]:
    backends = []
    rungs = []
    for i, (raises, score, threshold, tin, tout, price) in enumerate(spec):
        reply = (
            Reply(error=ConnectionError(f"rung {i} down"))
            if raises
            else Reply(f"answer {i}", usage=(tin, tout), extra={"score": score})
        )
        backend = ScriptedBackend(f"m{i}", [reply])
        backends.append(backend)
        rungs.append(
            {
                "model": backend,
                "scorer": ScriptedScore(),
                "threshold": threshold,
                "price": Price(input_per_mtok=price, output_per_mtok=price * 2),
            }
        )
    return Cascade(rungs, **kwargs), backends  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(
    spec=st.lists(rung_strategy, min_size=1, max_size=5),
    accept_last=st.booleans(),
    on_exhausted=st.sampled_from(["raise", "best"]),
    use_async=st.booleans(),
)
def test_accepted_rung_is_first_confident_one(
    spec: list[tuple[bool, float, float, int, int, float]],
    accept_last: bool,
    on_exhausted: str,
    use_async: bool,
) -> None:
    cascade, backends = build(spec, accept_last=accept_last, on_exhausted=on_exhausted)
    last = len(spec) - 1
    expected = next(
        (
            i
            for i, (raises, score, thr, *_) in enumerate(spec)
            if not raises and (score >= thr or (accept_last and i == last))
        ),
        None,
    )
    try:
        result = asyncio.run(cascade.ainvoke("q")) if use_async else cascade.invoke("q")
    except CascadeExhaustedError as exc:
        answered = [i for i, (raises, *_) in enumerate(spec) if not raises]
        assert expected is None
        assert on_exhausted == "raise" or not answered
        assert len(exc.exceptions) == len(spec) == len(exc.attempts)
        assert all(b.calls == 1 for b in backends)
        return

    if expected is None:
        # No rung accepted; "best" returns the highest-scored answer, the later one on ties.
        assert on_exhausted == "best"
        scored = [(score, i) for i, (raises, score, *_) in enumerate(spec) if not raises]
        assert result.outcome == "best"
        assert result.answered_by.rung == max(scored)[1]
        assert len(result.attempts) == len(spec)
    else:
        assert result.outcome == "accepted"
        assert result.answered_by.rung == expected
        assert [a.rung for a in result.attempts] == list(range(expected + 1))
        # No rung above the accepted one was called.
        assert [b.calls for b in backends] == [1] * (expected + 1) + [0] * (len(spec) - expected - 1)

    # Attempts and cost add up.
    total_in = total_out = 0
    total_cost = 0.0
    for attempt in result.attempts:
        raises, _, _, tin, tout, price = spec[attempt.rung]
        if raises:
            assert attempt.decision == "error"
            assert attempt.usage is None
            continue
        total_in += tin
        total_out += tout
        total_cost += (tin * price + tout * price * 2) / 1e6
    assert (result.usage.input_tokens, result.usage.output_tokens) == (total_in, total_out)
    if any(a.decision == "error" for a in result.attempts):
        # A failed call may still have been billed: the total is unknown, not understated.
        assert result.cost_usd is None
    else:
        assert result.cost_usd == pytest.approx(total_cost)


@settings(max_examples=300, deadline=None)
@given(
    score=st.one_of(st.none(), st.floats(0, 1)),
    threshold=st.floats(0, 1),
    chunks=st.integers(0, 100),
    margins=st.tuples(st.floats(0, 1), st.floats(0, 1)).map(sorted),
)
def test_the_prefix_rule_aborts_below_the_margin_and_hedges_in_the_band(
    score: float | None, threshold: float, chunks: int, margins: list[float]
) -> None:
    from cascade_router.policy import prefix_action

    hedge_margin, margin = margins
    got = prefix_action(
        score=score,
        hopeless=None,
        threshold=threshold,
        chunks=chunks,
        min_tokens=16,
        margin=margin,
        hedge_margin=hedge_margin,
    )
    if score is None or chunks < 16:
        assert got is None
    elif score < threshold - margin:
        assert got is not None
        assert got[0] == "abort"
    elif score < threshold - hedge_margin:
        assert got is not None
        assert got[0] == "hedge"
        assert f"prefix_margin {hedge_margin:g}" in got[1]
    else:
        assert got is None
    # Without a hedge margin, nothing is ever hedged.
    alone = prefix_action(
        score=score, hopeless=None, threshold=threshold, chunks=chunks, min_tokens=16, margin=margin
    )
    assert alone is None or alone[0] == "abort"


def test_a_hopeless_prefix_is_aborted_before_min_tokens() -> None:
    from cascade_router.policy import prefix_action

    got = prefix_action(
        score=0.99,
        hopeless="a stated calculation is wrong",
        threshold=0.5,
        chunks=3,
        min_tokens=16,
        margin=0.1,
    )
    assert got == ("abort", "a stated calculation is wrong (after 3 chunks)")
