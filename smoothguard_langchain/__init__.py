"""LangChain integration for SmoothGuard (ChatSmoothGuard, SmoothGuardRunnable): arriving with its own issue."""

__all__: list[str] = []
