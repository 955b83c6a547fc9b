"""Helpers for the proxy tests: the proxy on 127.0.0.1, small media, a small guard config."""

from __future__ import annotations

import base64
import io
import socket
import threading
import time
from typing import Any

import numpy as np
from PIL import Image

from smoothguard import GuardConfig


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProxyServer:
    """The proxy app served by uvicorn in a background thread on 127.0.0.1 (lifespan on, as in production)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.port = free_port()
        self._server: Any = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ProxyServer:
        import uvicorn

        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the proxy did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)


#: small and fast: 5 candidates, fixed seed
SMALL = GuardConfig(n_samples=5, seed=0)


def png_url(level: float = 0.8, size: int = 16, fmt: str = "PNG") -> str:
    """A uniform grey image at ``level`` in [0, 1] as a data URL."""
    image = Image.fromarray(np.full((size, size, 3), round(level * 255), dtype=np.uint8))
    buf = io.BytesIO()
    image.save(buf, fmt)
    mime = "image/png" if fmt == "PNG" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(buf.getvalue()).decode()}"


def wav_b64(seconds: float = 0.05, rate: int = 16000) -> str:
    """A quiet 440 Hz tone as base64 16-bit PCM WAV."""
    from smoothguard import Media

    t = np.arange(int(seconds * rate)) / rate
    clip = Media.audio((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), sample_rate=rate)
    return base64.b64encode(clip.to_wav_bytes()).decode()


def image_message(url: str, text: str = "Describe the image.", detail: str | None = None) -> dict[str, Any]:
    image_url: dict[str, Any] = {"url": url}
    if detail:
        image_url["detail"] = detail
    return {"role": "user", "content": [{"type": "text", "text": text}, {"type": "image_url", "image_url": image_url}]}


def decode_data_url(url: str) -> np.ndarray:
    raw = base64.b64decode(url.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"), dtype=np.float32) / 255.0
