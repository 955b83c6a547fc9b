"""Shared fixtures for the LangChain integration tests: small media in every content-block dialect."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator

import pytest
from lc_fakes import png_b64, wav_b64


def dialect_blocks(image_b64: str, audio_b64: str) -> dict[str, dict]:
    """One block per dialect the codec reads (4 image, 2 audio), keyed by a short name."""
    return {
        "v1_image": {"type": "image", "base64": image_b64, "mime_type": "image/png"},
        "openai_image": {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{image_b64}",
                                                            "detail": "low"}},
        "v0_image": {"type": "image", "source_type": "base64", "data": image_b64, "mime_type": "image/png"},
        "anthropic_image": {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                                        "data": image_b64}},
        "v1_audio": {"type": "audio", "base64": audio_b64, "mime_type": "audio/wav"},
        "openai_audio": {"type": "input_audio", "input_audio": {"data": audio_b64, "format": "wav"}},
    }


@pytest.fixture(scope="session")
def image_b64() -> str:
    """A dark grey 32x32 PNG (level 100/255), far from 0 and 1 so noise is never clipped."""
    return png_b64(100)


@pytest.fixture(scope="session")
def audio_b64() -> str:
    return wav_b64()


@pytest.fixture
def blocks(image_b64: str, audio_b64: str) -> dict[str, dict]:
    return dialect_blocks(image_b64, audio_b64)


@pytest.fixture
def media_server() -> Iterator[str]:
    """A static HTTP server on 127.0.0.1 serving /img.png (32x32 PNG) and /missing (404); yields its base URL."""
    import base64

    png = base64.b64decode(png_b64(200))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/img.png":
                self.send_response(200)
                self.send_header("Content-Type", "image/png")
                self.send_header("Content-Length", str(len(png)))
                self.end_headers()
                self.wfile.write(png)
            else:
                self.send_error(404)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
