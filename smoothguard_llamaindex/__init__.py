"""LlamaIndex integration for SmoothGuard (SmoothGuardLLM, GuardedQueryEngine): arriving with its own issue."""

__all__: list[str] = []
