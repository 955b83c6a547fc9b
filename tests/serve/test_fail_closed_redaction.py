"""A guard that fails closed, item 1: an upstream error message is redacted whole before it is shortened, so no
key (nor any 8+ character piece of one) reaches a client, wherever it sits in the message."""

from __future__ import annotations

import json

import httpx
import pytest
from serve_support import SMALL

from smoothguard.serve import create_app
from smoothguard.serve.errors import Redactor
from smoothguard.serve.upstream import http_error

#: an ``sk-`` shaped key (also caught by the token pattern) and one only its exact value can catch
KEYS = ["sk-live-9f8e7d6c5b4a3210ZYXWVUTSR", "Zq7Wx3Vb9Nm2Lk4Jh6Gf8Ds1Ap5Oi0UyT"]
FILLER = ("the upstream refused this request because the credentials did not match any known account; "
          "please check the settings and try again later. ") * 11


def pieces(key: str, size: int = 8) -> list[str]:
    return [key[i:i + size] for i in range(len(key) - size + 1)]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("shape", ["json", "text"])
def test_no_piece_of_a_key_survives_truncation_at_any_offset(key, shape):
    assert len(key) == 33 and len(FILLER) > 1100
    assert not any(piece in FILLER for piece in pieces(key))  # any piece found below came from the key
    redact = Redactor([key])
    for offset in range(len(FILLER) + 1):
        message = FILLER[:offset] + key + FILLER[offset:]
        if shape == "json":
            content = json.dumps({"error": {"message": message, "type": "invalid_request_error"}}).encode()
        else:
            content = message.encode()
        for status in (401, 500):
            text = http_error(status, content, redact).message
            leaked = [piece for piece in pieces(key) if piece in text]
            assert not leaked, (shape, offset, status, leaked)
            assert text.startswith(f"upstream HTTP {status}: ")
    assert len(http_error(500, content, redact).message) < 1100  # still shortened


async def test_a_key_at_offset_968_of_a_forwarded_error_never_reaches_the_client():
    key = KEYS[0]

    def upstream(request: httpx.Request) -> httpx.Response:
        message = FILLER[:968] + request.headers["authorization"].removeprefix("Bearer ") + FILLER[968:]
        return httpx.Response(401, json={"error": {"message": message, "type": "invalid_request_error"}})

    app = create_app("http://upstream.invalid/v1", SMALL, transport=httpx.MockTransport(upstream), warmup=False)
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://proxy") as client:
            response = await client.post("/v1/chat/completions", headers={"authorization": f"Bearer {key}"},
                                         json={"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    finally:
        await app.state.proxy.aclose()
    assert response.status_code == 401 and response.json()["error"]["code"] == "upstream_401"
    assert not [piece for piece in pieces(key) if piece in response.text]
