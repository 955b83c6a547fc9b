"""A guard that fails closed, item 5: an upstream response body is read under ``max_upstream_response_bytes``,
counted as it arrives (not buffered, then measured), in both fan-out clients and on the forwarded path."""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import pytest
from serve_support import SMALL, image_message, png_url

from smoothguard.errors import ConfigError
from smoothguard.serve import cli
from smoothguard.serve.settings import ServeSettings

LIMIT = 1024 * 1024
TOTAL = 128 * 1024 * 1024  # what a runaway upstream would send
CHUNK = 64 * 1024


class _Runaway(BaseHTTPRequestHandler):
    """mode "endless": 200 JSON without a length, TOTAL bytes; "declared": the same with Content-Length;
    "error": a 500 of TOTAL bytes; "padded": a completion of about LIMIT / 2 bytes (under the limit)."""

    mode = "endless"
    written: ClassVar[list[int]] = []  # bytes written per response

    def _answer(self) -> None:
        length = int(self.headers.get("content-length") or 0)
        if length:
            self.rfile.read(length)
        if self.mode == "padded":
            body = json.dumps({"id": "c", "object": "chat.completion", "created": 1, "model": "m", "padding":
                               "x" * (LIMIT // 2), "choices": [{"index": 0, "finish_reason": "stop", "message": {
                                   "role": "assistant", "content": "A cat."}}], "data": [{"id": "m"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_response(500 if self.mode == "error" else 200)
        self.send_header("Content-Type", "application/json")
        if self.mode == "declared":
            self.send_header("Content-Length", str(TOTAL))
        self.send_header("Connection", "close")
        self.end_headers()
        written = 0
        try:
            self.wfile.write(b'{"error": {"message": "')
            while written < TOTAL:
                self.wfile.write(b"x" * CHUNK)
                written += CHUNK
        except OSError:
            pass
        finally:
            self.written.append(written)
            self.close_connection = True

    do_POST = do_GET = _answer

    def log_message(self, *args):
        pass


@pytest.fixture
def runaway():
    _Runaway.written = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Runaway)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def post(proxy, body: dict) -> httpx.Response:
    response = httpx.post(proxy.base_url + "/chat/completions", json=body, timeout=30)
    assert "Traceback" not in response.text
    return response


def assert_too_large(response: httpx.Response) -> None:
    error = response.json()["error"]
    assert response.status_code == 502, response.text
    assert error["code"] == "upstream_response_too_large" and error["type"] == "upstream_error"
    assert str(LIMIT) in error["message"] and "xxxxxxxx" not in response.text


@pytest.mark.parametrize("mode", ["endless", "declared", "error"])
def test_an_oversize_upstream_response_fails_the_candidate(serve, runaway, mode):
    _Runaway.mode = mode
    with serve(runaway, SMALL, max_upstream_response_bytes=LIMIT,
               upstream_timeout=20) as proxy:
        guarded = post(proxy, {"model": "m", "messages": [image_message(png_url())]})
        text = post(proxy, {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        models = httpx.get(proxy.base_url + "/models", timeout=30)
    for response in (guarded, text, models):
        assert_too_large(response)
    assert "all 5 candidates failed the same way" in guarded.json()["error"]["message"]
    assert len(guarded.json()["smoothguard"]["errors"]) == 5
    # read with a running count: each connection was dropped long before the runaway upstream was done
    assert _Runaway.written and max(_Runaway.written) <= TOTAL // 4, _Runaway.written


def test_a_response_under_the_limit_is_fine(serve, runaway):
    _Runaway.mode = "padded"
    with serve(runaway, SMALL, max_upstream_response_bytes=LIMIT) as proxy:
        guarded = post(proxy, {"model": "m", "messages": [image_message(png_url())]})
        text = post(proxy, {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    assert guarded.status_code == 200 and guarded.json()["choices"][0]["message"]["content"] == "A cat."
    assert text.status_code == 200 and len(text.content) > LIMIT // 2


def test_the_setting(tmp_path):
    assert ServeSettings(upstream="http://h").max_upstream_response_bytes == 8 * 1024 * 1024
    for bad in (0, -1, 1.5, True, "8"):
        with pytest.raises(ConfigError, match="max_upstream_response_bytes"):
            ServeSettings(upstream="http://h", max_upstream_response_bytes=bad)
    parser = argparse.ArgumentParser()
    cli.configure(parser)
    _, settings = cli.build_settings(parser.parse_args(["--upstream", "http://h", "--max-upstream-response-bytes",
                                                        "4096"]))
    assert settings.max_upstream_response_bytes == 4096
    path = tmp_path / "sg.toml"
    path.write_text('[serve]\nupstream = "http://h"\nmax_upstream_response_bytes = 2048\n')
    assert cli.build_settings(parser.parse_args(["--config", str(path)]))[1].max_upstream_response_bytes == 2048
