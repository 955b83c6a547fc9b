"""SmoothGuard: defend a multimodal LLM call with noisy copies, clustering and a sentiment-aware vote.

>>> from smoothguard import SmoothGuard, Media
>>> guard = SmoothGuard(sigma=0.1, n_samples=11, seed=0)
>>> result = guard.run([Media.image("cat.png")], generate)      # generate(variants) -> one answer each
>>> result.answer, result.agreement, result.flagged
"""

from smoothguard._version import __version__
from smoothguard.config import GuardConfig
from smoothguard.errors import ConfigError, GenerationError, GuardFlagged, MediaError, SmoothGuardError
from smoothguard.guard import SmoothGuard
from smoothguard.media import Media
from smoothguard.result import CertifyResult, GuardResult, Sample

__all__ = [
    "CertifyResult",
    "ConfigError",
    "GenerationError",
    "GuardConfig",
    "GuardFlagged",
    "GuardResult",
    "Media",
    "MediaError",
    "Sample",
    "SmoothGuard",
    "SmoothGuardError",
    "__version__",
]
