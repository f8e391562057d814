"""LlamaIndex integration of cascade-router: ``CascadeLLM``, and ``cascade_records()`` to see
which model answered inside a query or chat engine."""

from llama_index.llms.cascade_router.base import CascadeLLM
from llama_index.llms.cascade_router.records import cascade_records

__all__ = ["CascadeLLM", "cascade_records"]
