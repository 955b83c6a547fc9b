"""The proxy over real HTTP: the official openai client -> proxy (uvicorn, 127.0.0.1) -> the OpenAI stub."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
import numpy as np
import openai
import pytest
from fakes.openai_server import OpenAIStub, answer_with_testbed, describe_brightness, png_data_url
from serve_support import SMALL, decode_data_url, free_port, image_message, png_url, wav_b64

from smoothguard import GuardConfig, Media
from smoothguard.config import DEFAULT_REFUSAL

BRIGHT = "The image is bright; its mean level is 0.8."
DARK = "The image is dark; its mean level is 0.2."


def client(proxy, key: str = "sk-client-abc123", **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key=key, max_retries=0, **kw)


def post(proxy, body, **kw) -> httpx.Response:
    content = json.dumps(body).encode() if isinstance(body, dict | list) else body  # bytes, or an iterator: chunked
    response = httpx.post(proxy.base_url + "/chat/completions", content=content,
                          headers={"content-type": "application/json", **kw.pop("headers", {})}, timeout=30, **kw)
    assert "Traceback" not in response.text and 'File "' not in response.text
    assert response.headers["x-request-id"].startswith("sg-")
    return response


def images_sent(stub) -> list[str]:
    return [r.body["messages"][0]["content"][1]["image_url"]["url"] for r in stub.requests]


# -- the guarded path -----------------------------------------------------------------------------------------


def test_guarded_request_sends_n_distinct_noisy_copies_and_votes(serve):
    original = png_url(0.8)
    with OpenAIStub() as stub, serve(stub.base_url) as proxy:
        completion = client(proxy).chat.completions.create(
            model="stub-vlm", temperature=0.9, messages=[image_message(original, detail="low")],
            extra_body={"smoothguard": {"sigma": 0.15}})
    assert completion.choices[0].message.content == BRIGHT
    assert completion.choices[0].finish_reason == "stop" and completion.object == "chat.completion"
    assert len(stub.requests) == SMALL.n_samples
    urls = images_sent(stub)
    assert original in urls  # candidate 0: the client's own block, bytes unchanged
    noisy = [u for u in urls if u != original]
    assert len(noisy) == SMALL.n_samples - 1 and len(set(noisy)) == len(noisy)  # every copy has its own noise
    for url in noisy:
        assert 0.005 < float(np.abs(decode_data_url(url) - 0.8).mean()) < 0.1
    for request in stub.requests:
        body = request.body
        assert body["temperature"] == 0 and body["stream"] is False and "smoothguard" not in body
        assert body["messages"][0]["content"][0] == {"type": "text", "text": "Describe the image."}
        assert body["messages"][0]["content"][1]["image_url"]["detail"] == "low"
    meta = completion.smoothguard
    assert meta["n_used"] == 5 and meta["agreement"] == 1.0 and not meta["flagged"] and not meta["passthrough"]
    assert meta["config"]["sigma"] == 0.15 and meta["request_id"].startswith("sg-")
    assert [s["original"] for s in meta["samples"]] == [True, False, False, False, False]
    assert completion.usage.total_tokens == 5 * (10 + len(BRIGHT.split()))  # what the request really cost


@pytest.mark.parametrize(("setting", "sent"), [(None, 0.9), (0.3, 0.3)])
def test_operator_temperature(serve, setting, sent):
    with OpenAIStub() as stub, serve(stub.base_url, temperature=setting) as proxy:
        client(proxy).chat.completions.create(model="m", temperature=0.9, messages=[image_message(png_url())])
    assert {r.body["temperature"] for r in stub.requests} == {sent}


def test_a_reasoning_model_is_not_sent_temperature_0(serve):
    """o-series and gpt-5 models refuse temperature 0 (smoothguard.decoding, the rule the adapters share): the
    proxy keeps the client's decoding for them and says so; other models get 0."""
    with OpenAIStub() as stub, serve(stub.base_url) as proxy:
        reasoning = client(proxy).chat.completions.create(model="o3-mini", messages=[image_message(png_url())])
        sent = [r.body for r in stub.requests]
        client(proxy).chat.completions.create(model="gpt-5-chat-latest", messages=[image_message(png_url())])
    assert sent and all("temperature" not in body for body in sent)
    assert any("takes no temperature 0" in note for note in reasoning.smoothguard["notes"])
    assert {r.body.get("temperature") for r in stub.requests[len(sent):]} == {0}


def test_streaming_returns_the_chosen_answer_as_sse(serve):
    with OpenAIStub() as stub, serve(stub.base_url) as proxy:
        chunks = list(client(proxy).chat.completions.create(
            model="m", messages=[image_message(png_url(0.2))], stream=True))
        raw = post(proxy, {"model": "m", "messages": [image_message(png_url(0.2))], "stream": True,
                           "stream_options": {"include_usage": True}})
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == DARK
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop" and chunks[-1].smoothguard["n_used"] == 5
    assert all(r.body["stream"] is False and "stream_options" not in r.body for r in stub.requests)
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = [line for line in raw.text.split("\n") if line]
    assert all(e.startswith("data: ") for e in events) and events[-1] == "data: [DONE]"
    payloads = [json.loads(e[6:]) for e in events[:-1]]
    assert payloads[-1]["choices"] == [] and payloads[-1]["usage"]["total_tokens"] > 0


def test_text_only_requests_are_forwarded_unchanged(serve):
    body = {"model": "stub-vlm", "temperature": 0.7, "messages": [{"role": "user", "content": "Hello there"}],
            "max_tokens": 12, "user": "u-1"}
    with OpenAIStub() as stub, serve(stub.base_url) as proxy:
        completion = client(proxy).chat.completions.create(**body)
        streamed = list(client(proxy).chat.completions.create(**body, stream=True))
        stripped = post(proxy, {**body, "smoothguard": {"n_samples": 3}})
    assert len(stub.requests) == 3
    assert stub.requests[0].body == body  # one call, the body as the client sent it
    assert stub.requests[2].body == body  # the smoothguard key is validated, then stripped
    assert completion.id == "chatcmpl-1" and completion.choices[0].message.content == describe_brightness({}, None)
    assert "smoothguard" not in (completion.model_extra or {})
    assert "".join(c.choices[0].delta.content or "" for c in streamed) == describe_brightness({}, None)
    assert stub.requests[1].body["stream"] is True  # streamed straight through
    assert stripped.status_code == 200 and "smoothguard" not in stripped.json()


def test_audio_is_guarded_too(serve):
    audio = wav_b64()
    message = {"role": "user", "content": [{"type": "text", "text": "What do you hear?"},
                                           {"type": "input_audio", "input_audio": {"data": audio, "format": "wav"}}]}
    with OpenAIStub() as stub, serve(stub.base_url) as proxy:
        completion = client(proxy).chat.completions.create(model="m", messages=[message])
        bad = post(proxy, {"model": "m", "messages": [{"role": "user", "content": [
            {"type": "input_audio", "input_audio": {"data": audio, "format": "mp3"}}]}]})
    sent = [r.body["messages"][0]["content"][1]["input_audio"] for r in stub.requests]
    assert len(sent) == 5 and sent.count({"data": audio, "format": "wav"}) == 1
    assert len({s["data"] for s in sent}) == 5
    original = Media.audio(base64.b64decode(audio))
    for s in sent:
        copy = Media.audio(base64.b64decode(s["data"]))
        assert copy.sample_rate == 16000 and np.abs(copy.data - original.data).mean() < 0.05
    assert completion.smoothguard["n_used"] == 5
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "messages[0].content[0]"
    assert "WAV" in bad.json()["error"]["message"]


def test_no_cross_talk_between_concurrent_requests(serve):
    levels = [0.2, 0.8] * 8

    async def main(proxy):
        async with openai.AsyncOpenAI(base_url=proxy.base_url, api_key="k", max_retries=0) as c:
            return await asyncio.gather(*(c.chat.completions.create(model="m", messages=[image_message(png_url(lv))])
                                          for lv in levels))

    with OpenAIStub(latency=0.05) as stub, serve(stub.base_url) as proxy:
        completions = asyncio.run(main(proxy))
    assert [c.choices[0].message.content for c in completions] == [DARK if lv < 0.5 else BRIGHT for lv in levels]
    assert len(stub.requests) == 16 * 5 and stub.max_in_flight() > 5  # requests and copies overlapped


# -- overrides and policies -----------------------------------------------------------------------------------


def test_overrides_and_their_limits(serve):
    with OpenAIStub() as stub, serve(stub.base_url, limits={"n_samples": (2, 4)}) as proxy:
        c = client(proxy)
        ok = c.chat.completions.create(model="m", messages=[image_message(png_url())],
                                       extra_body={"smoothguard": {"n_samples": 3, "sigma": 0.2}})
        assert len(stub.requests) == 3 and ok.smoothguard["config"]["n_samples"] == 3
        with pytest.raises(openai.BadRequestError) as too_many:
            c.chat.completions.create(model="m", messages=[image_message(png_url())],
                                      extra_body={"smoothguard": {"n_samples": 5}})
        with pytest.raises(openai.BadRequestError) as forbidden:
            c.chat.completions.create(model="m", messages=[image_message(png_url())],
                                      extra_body={"smoothguard": {"remote_media": "fetch"}})
        with pytest.raises(openai.BadRequestError) as unknown:
            c.chat.completions.create(model="m", messages=[image_message(png_url())],
                                      extra_body={"smoothguard": {"sigmaa": 0.2}})
    assert len(stub.requests) == 3  # refused requests never reach the upstream
    error = too_many.value.body
    assert error["param"] == "smoothguard.n_samples" and "[2, 4]" in error["message"]
    assert error["code"] == "smoothguard_override_out_of_limits"
    assert forbidden.value.body["code"] == "smoothguard_override_not_allowed"
    assert "did you mean 'sigma'" in unknown.value.body["message"]


def alternating(body, image):
    return next(alternating.answers)


def test_on_flag_refuse_and_raise(serve):
    a, b = "A red square lies on a wooden table.", "Two blue circles float in a cloudy sky."
    flaggy = GuardConfig(n_samples=5, seed=0, min_agreement=0.99)
    alternating.answers = itertools.cycle([a, b])
    with OpenAIStub(answer=alternating) as stub:
        with serve(stub.base_url, flaggy) as proxy:
            answered = client(proxy).chat.completions.create(model="m", messages=[image_message(png_url())])
        with serve(stub.base_url, flaggy.replace(on_flag="refuse")) as proxy:
            refused = client(proxy).chat.completions.create(model="m", messages=[image_message(png_url())])
        with serve(stub.base_url, flaggy.replace(on_flag="raise")) as proxy:
            with pytest.raises(openai.UnprocessableEntityError) as info:
                client(proxy).chat.completions.create(model="m", messages=[image_message(png_url())])
            raw = post(proxy, {"model": "m", "messages": [image_message(png_url())]})
    assert answered.smoothguard["flagged"] and answered.choices[0].message.content in (a, b)
    assert refused.choices[0].message.content == DEFAULT_REFUSAL and refused.smoothguard["refused"]
    assert info.value.status_code == 422 and info.value.body["type"] == "smoothguard_flagged"
    body = raw.json()
    assert raw.status_code == 422 and body["error"]["code"] == "flagged"
    assert body["smoothguard"]["flagged"] and len(body["smoothguard"]["samples"]) == 5


# -- failures -------------------------------------------------------------------------------------------------


def test_quorum_survives_some_failed_copies(serve):
    calls = itertools.count()

    def flaky(body, image):
        return RuntimeError("GPU fell over") if next(calls) < 2 else describe_brightness(body, image)

    with OpenAIStub(answer=flaky) as stub, serve(stub.base_url) as proxy:
        completion = client(proxy).chat.completions.create(model="m", messages=[image_message(png_url())])
    meta = completion.smoothguard
    assert completion.choices[0].message.content == BRIGHT and meta["n_used"] == 5
    errors = [s["error"] for s in meta["samples"] if s["error"]]
    assert len(errors) == 2 and all("upstream HTTP 500: GPU fell over" in e for e in errors)
    assert completion.usage.total_tokens == 3 * (10 + len(BRIGHT.split()))


def test_every_copy_failing_is_a_clear_502(serve):
    with OpenAIStub(answer=lambda body, image: RuntimeError("CUDA out of memory")) as stub, \
            serve(stub.base_url) as proxy:
        with pytest.raises(openai.InternalServerError) as info:
            client(proxy).chat.completions.create(model="m", messages=[image_message(png_url())])
        raw = post(proxy, {"model": "m", "messages": [image_message(png_url())]})
    assert info.value.status_code == 502
    assert "CUDA out of memory" in info.value.message and "all 5 candidates failed" in info.value.message
    body = raw.json()
    assert body["error"]["type"] == "upstream_error" and body["error"]["code"] == "upstream_500"
    assert len(body["smoothguard"]["errors"]) == 5


def test_copies_failing_in_different_ways_list_every_error(serve):
    calls = itertools.count()

    def mixed(body, image):
        return RuntimeError(f"failure number {next(calls)}") if next(calls) % 2 else ""

    with OpenAIStub(answer=mixed) as stub, serve(stub.base_url) as proxy:
        raw = post(proxy, {"model": "m", "messages": [image_message(png_url())]})
    body = raw.json()
    assert raw.status_code == 502 and body["error"]["code"] == "upstream_failed"
    assert "of 5 candidates were answered" in body["error"]["message"]
    assert len(body["smoothguard"]["errors"]) == 5
    assert any("empty answer" in e["error"] for e in body["smoothguard"]["errors"])


def test_unreachable_and_slow_upstreams(serve):
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with serve(dead) as proxy:
        guarded = post(proxy, {"model": "m", "messages": [image_message(png_url())]})
        text = post(proxy, {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
        models = httpx.get(proxy.base_url + "/models")
    for response in (guarded, text, models):
        assert response.status_code == 502 and response.json()["error"]["code"] == "upstream_unreachable"
        assert "could not connect" in response.json()["error"]["message"]
    with OpenAIStub(latency=0.5) as stub, serve(stub.base_url, upstream_timeout=0.1) as proxy:
        slow = post(proxy, {"model": "m", "messages": [image_message(png_url())]})
        slow_text = post(proxy, {"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    for response in (slow, slow_text):
        assert response.status_code == 504 and response.json()["error"]["code"] == "upstream_timeout"


def test_time_budget_leaves_a_slow_candidate_out_of_the_vote(serve):
    """One copy of five hangs (a slow replica): the answer comes at the budget, voted by the four that answered."""
    with OpenAIStub(latency=lambda order: 5.0 if order == 2 else 0.05) as stub, \
            serve(stub.base_url, SMALL.replace(time_budget=1.5)) as proxy:
        start = time.monotonic()
        response = post(proxy, {"model": "m", "messages": [image_message(png_url(0.8))]})
        elapsed = time.monotonic() - start
    body = response.json()
    assert response.status_code == 200 and body["choices"][0]["message"]["content"] == BRIGHT
    assert 1.4 < elapsed < 4.0  # waited for the budget (1.5 s, room for a collector pause), not for the 5 s call
    meta = body["smoothguard"]
    late = [sample for sample in meta["samples"] if sample["error"]]
    assert len(late) == 1 and "time budget of 1.5 s" in late[0]["error"]
    assert meta["n_used"] == 5 and sum(sample["answer"] == BRIGHT for sample in meta["samples"]) == 4
    assert any("1 candidate(s) did not answer in time" in note for note in meta["notes"])


def test_freeze_heap_freezes_the_collector_after_the_warm_up(serve):
    import gc

    with OpenAIStub() as stub:
        with serve(stub.base_url) as proxy:
            assert not proxy.app.state.proxy.freeze_heap and gc.get_freeze_count() == 0
        try:
            with serve(stub.base_url, freeze_heap=True):
                assert gc.get_freeze_count() > 0
        finally:
            gc.unfreeze()


def test_time_budget_without_a_quorum_is_a_504(serve):
    slow_three = {1, 2, 3}
    with OpenAIStub(latency=lambda order: 5.0 if order in slow_three else 0.05) as stub, \
            serve(stub.base_url, SMALL.replace(time_budget=1.5)) as proxy:
        some = post(proxy, {"model": "m", "messages": [image_message(png_url(0.8))]})
    with OpenAIStub(latency=3.0) as stub, serve(stub.base_url, SMALL.replace(time_budget=0.3)) as proxy:
        start = time.monotonic()
        none = post(proxy, {"model": "m", "messages": [image_message(png_url(0.8))]})
        elapsed = time.monotonic() - start
    for response in (some, none):
        assert response.status_code == 504 and response.json()["error"]["code"] == "time_budget_exceeded"
    assert "only 2 of 5 candidates were answered" in some.json()["error"]["message"]
    assert len(some.json()["smoothguard"]["errors"]) == 3
    assert "all 5 candidates failed the same way" in none.json()["error"]["message"] and elapsed < 2.5


def test_time_budget_has_no_effect_on_fast_requests(serve):
    with OpenAIStub(latency=0.05) as stub, serve(stub.base_url, SMALL.replace(time_budget=5.0)) as proxy:
        response = post(proxy, {"model": "m", "messages": [image_message(png_url(0.2))]})
    meta = response.json()["smoothguard"]
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == DARK
    assert not any(sample["error"] for sample in meta["samples"]) and not meta["notes"]
    assert meta["config"]["time_budget"] == 5.0


def test_bad_requests_get_openai_style_errors(serve):
    with OpenAIStub() as stub, serve(stub.base_url, max_body_bytes=4096,
                                     config=GuardConfig(n_samples=3, max_media_bytes=2000, max_image_pixels=4096,
                                                        max_media_items=2)) as proxy:
        cases = {
            "oversize body": (post(proxy, {"model": "m", "messages": [{"role": "user", "content": "x" * 5000}]}),
                              413, "request_too_large"),
            "oversize chunked body": (post(proxy, iter([b"{" + b" " * 3000, b" " * 3000 + b"}"])),
                                      413, "request_too_large"),
            "malformed JSON": (post(proxy, b'{"model": "m", "messages": [}'), 400, "invalid_json"),
            "not an object": (post(proxy, b"[1, 2]"), 400, "invalid_json"),
            "not UTF-8": (post(proxy, b"\xff\xfe{}"), 400, "invalid_json"),
            "nested too deeply": (post(proxy, b"[" * 1500 + b"]" * 1500), 400, "invalid_json"),
            "no messages": (post(proxy, {"model": "m"}), 400, "invalid_messages"),
            "undecodable image": (post(proxy, {"model": "m", "messages": [
                image_message("data:image/png;base64,AAAA")]}), 400, "invalid_media"),
            "too many pixels": (post(proxy, {"model": "m", "messages": [image_message(png_url(size=80))]}),
                                400, "invalid_media"),
            "too many images": (post(proxy, {"model": "m", "messages": [image_message(png_url())] * 3}),
                                400, "too_many_media"),
            "n > 1": (post(proxy, {"model": "m", "n": 2, "messages": [image_message(png_url())]}),
                      400, "unsupported_parameter"),
            "video": (post(proxy, {"model": "m", "messages": [{"role": "user", "content": [
                {"type": "video_url", "video_url": {"url": "https://x/v.mp4"}}]}]}), 400, "unsupported_media"),
        }
        missing = httpx.get(proxy.base_url + "/completions")
        wrong_method = httpx.get(proxy.base_url + "/chat/completions")
    for name, (response, status, code) in cases.items():
        assert response.status_code == status, name
        error = response.json()["error"]
        assert error["code"] == code and error["type"] == "invalid_request_error" and error["message"], name
    assert cases["undecodable image"][0].json()["error"]["param"] == "messages[0].content[1]"
    assert "max_pixels" in cases["too many pixels"][0].json()["error"]["message"]
    assert missing.status_code == 404 and "/v1/chat/completions" in missing.json()["error"]["message"]
    assert wrong_method.status_code == 405 and wrong_method.json()["error"]["code"] == "method_not_allowed"
    assert stub.requests == []  # none of them cost an upstream call


def test_no_traceback_reaches_the_client(serve, monkeypatch, caplog):
    import smoothguard.serve.app as app_module

    def broken(body, config=None):
        raise RuntimeError("kaboom: internal detail")

    monkeypatch.setattr(app_module, "find_media", broken)
    with OpenAIStub() as stub, serve(stub.base_url) as proxy:
        response = post(proxy, {"model": "m", "messages": [image_message(png_url())]})
    error = response.json()["error"]
    assert response.status_code == 500 and error["type"] == "server_error" and error["code"] == "internal_error"
    assert "kaboom" not in response.text and response.headers["x-request-id"] in error["message"]
    assert "kaboom: internal detail" in caplog.text and "Traceback" in caplog.text  # the operator's log has it


# -- auth and secrets -----------------------------------------------------------------------------------------

CLIENT_KEY = "sk-client-abc123"
OPERATOR_KEY = "sk-operator-zzz999"


def test_client_authorization_is_forwarded(serve):
    with OpenAIStub() as stub, serve(stub.base_url) as proxy:
        c = client(proxy, CLIENT_KEY, organization="org-7")
        c.chat.completions.create(model="m", messages=[image_message(png_url())])
        c.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        c.models.list()
    assert len(stub.requests) == 6
    assert {r.headers["authorization"] for r in stub.requests} == {f"Bearer {CLIENT_KEY}"}
    assert {r.headers["openai-organization"] for r in stub.requests} == {"org-7"}


def test_operator_key_replaces_the_clients_and_no_key_leaks(serve, monkeypatch, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("SG_TEST_UPSTREAM_KEY", OPERATOR_KEY)

    def leaky(body, image):
        return RuntimeError(f"Incorrect API key provided: {OPERATOR_KEY} (also saw {CLIENT_KEY})")

    with OpenAIStub() as stub, serve(stub.base_url, api_key_env="SG_TEST_UPSTREAM_KEY") as proxy:
        ok = client(proxy, CLIENT_KEY).chat.completions.create(model="m", messages=[image_message(png_url())])
        text = client(proxy, CLIENT_KEY).chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}])
        stub.answer = leaky
        failures = [post(proxy, {"model": "m", "messages": [image_message(png_url())]},
                         headers={"authorization": f"Bearer {CLIENT_KEY}"}),
                    post(proxy, {"model": "m", "messages": [{"role": "user", "content": "hi"}]},
                         headers={"authorization": f"Bearer {CLIENT_KEY}"})]
        health = httpx.get(proxy.root + "/health")
    assert {r.headers["authorization"] for r in stub.requests} == {f"Bearer {OPERATOR_KEY}"}
    assert [f.status_code for f in failures] == [502, 502]
    assert "Incorrect API key provided: [redacted]" in failures[0].text
    responses = [ok.model_dump_json(), text.model_dump_json(), health.text] + [f.text for f in failures]
    proxy_logs = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith(("openai", "httpx2")))
    captured = capfd.readouterr()
    for secret in (OPERATOR_KEY, CLIENT_KEY):
        for text_ in [*responses, proxy_logs, captured.out, captured.err]:
            assert secret not in text_
    assert "mode=guarded" in proxy_logs and "mode=passthrough" in proxy_logs


# -- remote media ---------------------------------------------------------------------------------------------


class _Images(BaseHTTPRequestHandler):
    png = Media.image(png_url(0.8)).to_png_bytes()
    big = Media.image(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).to_png_bytes()

    def do_GET(self):
        if self.path == "/redirect":
            self.send_response(302)
            self.send_header("Location", "/cat.png")
            self.end_headers()
            return
        body = {"/cat.png": self.png, "/big.png": self.big}.get(self.path)
        self.send_response(200 if body else 404)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(body or b"")))
        self.end_headers()
        self.wfile.write(body or b"")

    def log_message(self, *args):
        pass


@pytest.fixture
def image_server():
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_remote_media_fetch(serve, image_server):
    with OpenAIStub() as stub, serve(stub.base_url, allow_private_fetch=True,
                                     config=SMALL.replace(max_media_bytes=1000)) as proxy:
        c = client(proxy)
        completion = c.chat.completions.create(model="m", messages=[image_message(image_server + "/redirect")])
        missing = post(proxy, {"model": "m", "messages": [image_message(image_server + "/nope.png")]})
        big = post(proxy, {"model": "m", "messages": [image_message(image_server + "/big.png")]})
    assert completion.choices[0].message.content == BRIGHT
    urls = images_sent(stub)
    assert len(urls) == 5 and all(u.startswith("data:image/png;base64,") for u in urls)
    assert f"data:image/png;base64,{base64.b64encode(_Images.png).decode()}" in urls  # the original, as fetched
    assert len(set(urls)) == 5
    for response, words in ((missing, "HTTP 404"), (big, "max_media_bytes")):
        assert response.status_code == 400 and response.json()["error"]["code"] == "media_fetch_failed"
        assert words in response.json()["error"]["message"]


def test_remote_media_private_passthrough_and_error(serve, image_server):
    message = image_message(image_server + "/cat.png")
    with OpenAIStub() as stub, serve(stub.base_url) as proxy:
        private = post(proxy, {"model": "m", "messages": [message]})
    assert private.status_code == 400 and "non-public address" in private.json()["error"]["message"]
    assert stub.requests == []
    with OpenAIStub() as stub, serve(stub.base_url, SMALL.replace(remote_media="passthrough")) as proxy:
        passed = client(proxy).chat.completions.create(model="m", messages=[message])
        mixed = client(proxy).chat.completions.create(model="m", messages=[
            {"role": "user", "content": [*message["content"], {"type": "image_url", "image_url": {"url": png_url()}}]}])
    assert stub.requests[0].body["messages"] == [message]  # one call, the URL as sent
    assert passed.smoothguard["passthrough"] and passed.smoothguard["n_used"] == 1
    assert any("unsmoothed" in note for note in passed.smoothguard["notes"])
    assert len(stub.requests) == 1 + 5 and not mixed.smoothguard["passthrough"]
    assert {r.body["messages"][0]["content"][1]["image_url"]["url"] for r in stub.requests[1:]} == \
        {image_server + "/cat.png"}
    assert any("messages[0].content[1]" in note for note in mixed.smoothguard["notes"])
    with OpenAIStub() as stub, serve(stub.base_url, SMALL.replace(remote_media="error")) as proxy:
        refused = post(proxy, {"model": "m", "messages": [message]})
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "remote_media_not_allowed"


# -- concurrency, models, health ------------------------------------------------------------------------------


def test_upstream_concurrency_is_bounded(serve):
    with OpenAIStub(latency=0.05) as stub, serve(stub.base_url, GuardConfig(n_samples=6, seed=0),
                                                 max_upstream_concurrency=2) as proxy:
        client(proxy).chat.completions.create(model="m", messages=[image_message(png_url())])
    assert len(stub.requests) == 6 and stub.max_in_flight() == 2
    with OpenAIStub(latency=0.05) as stub, serve(stub.base_url, GuardConfig(n_samples=4, seed=0,
                                                                            max_concurrency=1)) as proxy:
        client(proxy).chat.completions.create(model="m", messages=[image_message(png_url())])
    assert len(stub.requests) == 4 and stub.max_in_flight() == 1


def test_models_and_health(serve):
    with OpenAIStub() as stub, serve(stub.base_url) as proxy:
        models = client(proxy).models.list()
        health = httpx.get(proxy.root + "/health")
    assert [m.id for m in models.data] == ["stub-vlm"]
    assert health.status_code == 200 and health.json()["status"] == "ok" and health.json()["ready"] is True


def test_a_large_photo_keeps_its_size_in_every_copy(serve):
    pixels = np.random.default_rng(1).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    url = "data:image/png;base64," + base64.b64encode(Media.image(pixels).to_png_bytes()).decode()
    assert len(url) > 1024 * 1024  # parsed off the event loop
    with OpenAIStub() as stub, serve(stub.base_url, GuardConfig(n_samples=3, seed=0)) as proxy:
        completion = client(proxy).chat.completions.create(model="m", messages=[image_message(url)])
    assert completion.smoothguard["n_used"] == 3
    copies = [decode_data_url(u) for u in images_sent(stub)]
    assert all(c.shape == (480, 640, 3) for c in copies)
    untouched = [np.array_equal(np.rint(c * 255).astype(np.uint8), pixels) for c in copies]
    assert sum(untouched) == 1  # only the original


# -- in front of a real model --------------------------------------------------------------------------------


def test_proxy_in_front_of_the_testbed_model(serve, testbed_main, testbed_questions, one_torch_thread):
    """The official client -> proxy -> an upstream serving the shipped testbed VLM: right answers, every copy
    a distinct noisy PNG, and the candidates agreeing as they do on clean inputs."""
    config = GuardConfig(sigma=0.1, n_samples=5, seed=0)
    upstream = OpenAIStub(answer=answer_with_testbed(testbed_main), model="testbed")
    with upstream as stub, serve(stub.base_url, config) as proxy:
        for example in testbed_questions:
            stub.requests.clear()
            url = png_data_url(example.image)
            completion = client(proxy).chat.completions.create(
                model="testbed", messages=[image_message(url, text=example.question)])
            assert completion.choices[0].message.content == example.answer, example.question
            sent = images_sent(stub)
            assert len(sent) == 5 and url in sent and len(set(sent)) == 5
            assert all(r.body["messages"][0]["content"][0]["text"] == example.question for r in stub.requests)
            meta = completion.smoothguard
            assert meta["n_used"] == 5 and meta["agreement"] >= 0.8 and not meta["flagged"]
