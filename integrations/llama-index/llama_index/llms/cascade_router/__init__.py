"""LlamaIndex integration of cascade-router: ``CascadeLLM``."""

from llama_index.llms.cascade_router.base import CascadeLLM

__all__ = ["CascadeLLM"]
