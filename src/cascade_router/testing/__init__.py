"""Fakes for testing code that uses cascade_router, without a network or an API key.

- ``Reply``: one scripted answer (text, tool calls, realistic logprobs, usage, an error, a
  delay, a stream that breaks after n chunks).
- ``ScriptedBackend``: the fake of the core ``Backend`` seam.
- ``openai_logprobs``: OpenAI-format logprobs with a chosen mean token probability.

The LangChain fake chat model built on the same ``Reply`` is
``langchain_cascade_router.testing.ScriptedChatModel``.
"""

from cascade_router.testing.backend import ScriptedBackend, reply_output
from cascade_router.testing.replies import Reply, Script, as_reply, openai_logprobs, tokenize

__all__ = ["Reply", "Script", "ScriptedBackend", "as_reply", "openai_logprobs", "reply_output", "tokenize"]
