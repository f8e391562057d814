"""Which model answered, for LlamaIndex code that never sees the LLM's responses.

A query engine or a chat engine calls the LLM inside and hands back its own ``Response``, so the
cascade record on the ``ChatResponse`` (``additional_kwargs["cascade"]``) does not reach the
caller. ``cascade_records()`` collects the record of every ``CascadeLLM`` answer made inside its
block (in this thread or task, and in the tasks it starts):

```python
with cascade_records() as records:
    response = query_engine.query("What did the author do growing up?")
print(records[-1]["answered_by"])  # {"rung": 1, "name": "strong", "model": "gpt-4o"}
```
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from typing import Any

_ACTIVE: contextvars.ContextVar[tuple[list[dict[str, Any]], ...]] = contextvars.ContextVar(
    "cascade_router_llamaindex_records", default=()
)


@contextlib.contextmanager
def cascade_records() -> Iterator[list[dict[str, Any]]]:
    """A list that receives the cascade record of each answer given inside the block, in order
    (the same dict as ``ChatResponse.additional_kwargs["cascade"]``)."""
    records: list[dict[str, Any]] = []
    token = _ACTIVE.set((*_ACTIVE.get(), records))
    try:
        yield records
    finally:
        _ACTIVE.reset(token)


def note(record: dict[str, Any]) -> None:
    """Hand ``record`` to every ``cascade_records()`` block this code runs in."""
    for records in _ACTIVE.get():
        records.append(record)
