"""Native backends: rungs built directly on provider SDKs, no LLM framework needed."""
