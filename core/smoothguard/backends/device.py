"""Resolving the ``device`` and ``dtype`` a user asks for, with errors that say what to do."""

from __future__ import annotations

from typing import Any

from smoothguard.errors import ConfigError

__all__ = ["resolve_device", "resolve_dtype"]

_DTYPES = {
    "float32": "float32", "fp32": "float32", "float": "float32",
    "float16": "float16", "fp16": "float16", "half": "float16",
    "bfloat16": "bfloat16", "bf16": "bfloat16",
}


def resolve_device(device: Any = "auto") -> Any:
    """A ``torch.device`` for ``device``: ``"auto"`` (CUDA, else Apple MPS, else CPU), ``"cpu"``, ``"cuda"``,
    ``"cuda:1"``, ``"mps"`` or a ``torch.device``. Raises :class:`ConfigError` if it is not there."""
    import torch

    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        return torch.device("mps" if mps is not None and mps.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise ConfigError(f"device={device!r} is not a device torch knows; use 'auto', 'cpu', 'cuda', 'cuda:1' "
                          "or 'mps'") from exc
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            why = (f"this torch build ({torch.__version__}) has no CUDA support" if torch.version.cuda is None
                   else "no CUDA GPU is visible (check the driver and CUDA_VISIBLE_DEVICES)")
            raise ConfigError(f"device={device!r} asks for CUDA, but {why}. Pass device='cpu' or 'auto', or "
                              "install a CUDA build of torch.")
        count = torch.cuda.device_count()
        if resolved.index is not None and resolved.index >= count:
            raise ConfigError(f"device={device!r}: there are only {count} CUDA device(s) (cuda:0 to cuda:{count - 1})")
    elif resolved.type == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise ConfigError(f"device={device!r} asks for Apple MPS, which this machine or torch build lacks; "
                              "pass device='cpu' or 'auto'")
    elif resolved.type != "cpu":
        backend = getattr(torch, resolved.type, None)
        available = getattr(backend, "is_available", None)
        if available is None or not available():
            raise ConfigError(f"device={device!r} is not available here; pass device='cpu' or 'auto'")
    return resolved


def resolve_dtype(dtype: Any, device: Any) -> Any:
    """A ``torch.dtype`` for ``dtype`` on ``device``: ``"auto"`` (bfloat16 on CUDA GPUs that support it, else
    float16 on CUDA and MPS, float32 on CPU), ``"float32"``/``"fp32"``, ``"float16"``/``"fp16"``,
    ``"bfloat16"``/``"bf16"`` or a ``torch.dtype``."""
    import torch

    if dtype is None or dtype == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float16 if device.type == "mps" else torch.float32
    if isinstance(dtype, torch.dtype):
        resolved = dtype
    else:
        name = _DTYPES.get(str(dtype).lower().removeprefix("torch."))
        if name is None:
            raise ConfigError(f"dtype={dtype!r} is not supported; use 'auto', 'float32', 'float16' or 'bfloat16'")
        resolved = getattr(torch, name)
    if not resolved.is_floating_point:
        raise ConfigError(f"dtype={dtype!r} is not a floating-point dtype; use 'auto', 'float32', 'float16' or "
                          "'bfloat16' (for quantised weights pass quantization_config=...)")
    if resolved == torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError(f"dtype='bfloat16' is not supported by {torch.cuda.get_device_name(device)}; "
                          "use 'float16' or 'auto'")
    return resolved
