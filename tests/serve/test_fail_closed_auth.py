"""A guard that fails closed, item 3: the proxy can authenticate its clients (``--client-keys-env VAR``), with
keys of its own, distinct from the upstream key, which never travel upstream."""

from __future__ import annotations

import argparse
import json
import logging

import httpx
import openai
import pytest
from fakes.openai_server import OpenAIStub
from serve_support import SMALL, image_message, png_url

from smoothguard.errors import ConfigError
from smoothguard.serve import cli, create_app
from smoothguard.serve.settings import ServeSettings

ALPHA, BETA = "ck-alpha-1111111111", "ck-beta-22222222222"
OPERATOR = "sk-operator-zzz999888"
VAR = "SG_TEST_CLIENT_KEYS"


def client(proxy, key: str, **kw) -> openai.OpenAI:
    return openai.OpenAI(base_url=proxy.base_url, api_key=key, max_retries=0, **kw)


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="smoothguard serve")
    cli.configure(parser)
    return parser.parse_args(argv)


def test_client_keys_come_from_an_environment_variable(monkeypatch, tmp_path, capsys):
    monkeypatch.setenv(VAR, f" {ALPHA} ,{BETA},, ")
    settings = ServeSettings(upstream="http://h", client_keys_env=VAR)
    assert settings.resolve_client_keys() == (ALPHA, BETA)
    assert ServeSettings(upstream="http://h").resolve_client_keys() == ()
    assert ALPHA not in json.dumps(settings.to_dict(secrets=True))  # only the variable's name is a setting
    _, from_flag = cli.build_settings(parse("--upstream", "http://h", "--client-keys-env", VAR))
    assert from_flag.client_keys_env == VAR
    path = tmp_path / "sg.toml"
    path.write_text(f'[serve]\nupstream = "http://h"\nclient_keys_env = "{VAR}"\n')
    assert cli.build_settings(parse("--config", str(path)))[1].resolve_client_keys() == (ALPHA, BETA)
    for flag in ("--client-keys", "--client-key", "--api-key"):  # never keys on the command line, not even by
        with pytest.raises(SystemExit):                           # argparse's abbreviation of the *-env flags
            parse("--upstream", "http://h", flag, ALPHA)
    assert ALPHA not in capsys.readouterr().err
    for name in (ALPHA, "my key", ""):  # a key where a variable's name belongs is refused without being echoed
        with pytest.raises(ConfigError, match="client_keys_env") as info:
            ServeSettings(upstream="http://h", client_keys_env=name)
        assert not name or name not in str(info.value)
    for value in ("", " , ,"):
        monkeypatch.setenv(VAR, value)
        with pytest.raises(ConfigError, match=VAR):
            cli.build_settings(parse("--upstream", "http://h", "--client-keys-env", VAR))
        with pytest.raises(ConfigError, match=VAR):
            create_app("http://h", SMALL, client_keys_env=VAR)
    monkeypatch.delenv(VAR)
    assert cli.run(parse("--upstream", "http://h", "--client-keys-env", VAR, "--print-config")) == 2


def test_clients_need_one_of_the_keys(serve, monkeypatch, caplog, capfd):
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv(VAR, f"{ALPHA},{BETA}")
    text = [{"role": "user", "content": "hi"}]
    with OpenAIStub() as stub, serve(stub.base_url, client_keys_env=VAR) as proxy:
        guarded = client(proxy, ALPHA).chat.completions.create(model="m", messages=[image_message(png_url())])
        forwarded = client(proxy, BETA).chat.completions.create(model="m", messages=text)
        streamed = list(client(proxy, BETA).chat.completions.create(model="m", messages=text, stream=True))
        models = client(proxy, ALPHA).models.list()
        answered = len(stub.requests)
        refused = []
        for key in ("ck-alpha-1111111112", ALPHA[:-1], ALPHA + "1", "ck-beta", OPERATOR):
            for call in (lambda c: c.chat.completions.create(model="m", messages=[image_message(png_url())]),
                         lambda c: c.chat.completions.create(model="m", messages=text),
                         lambda c: c.models.list()):
                with pytest.raises(openai.AuthenticationError) as info:
                    call(client(proxy, key))
                refused.append(info.value)
        raw = [httpx.post(proxy.base_url + "/chat/completions", json={"model": "m", "messages": text},
                          headers=headers) for headers in
               ({}, {"authorization": ALPHA}, {"authorization": f"Basic {ALPHA}"}, {"authorization": "Bearer"})]
        health = httpx.get(proxy.root + "/health")
    assert guarded.smoothguard["n_used"] == 5 and forwarded.choices[0].message.content
    assert streamed and [m.id for m in models.data] == ["stub-vlm"]
    assert len(stub.requests) == answered == 5 + 1 + 1  # the refused requests never reached the upstream
    for error in refused:
        assert error.status_code == 401 and error.body["code"] == "invalid_api_key"
        assert error.body["type"] in ("invalid_request_error", "authentication_error")
    for response in raw:
        assert response.status_code == 401 and response.json()["error"]["code"] == "invalid_api_key"
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert health.status_code == 200 and health.json()["status"] == "ok"  # probes stay open
    for request in stub.requests:  # no client key upstream, and no key at all without an operator key
        assert "authorization" not in request.headers
    logs = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("smoothguard"))
    captured = capfd.readouterr()
    for key in (ALPHA, BETA):
        assert key not in logs and key not in captured.out and key not in captured.err
        assert not any(key in json.dumps(error.body) for error in refused)


def test_with_client_keys_the_operator_key_goes_upstream(serve, monkeypatch):
    monkeypatch.setenv(VAR, ALPHA)
    monkeypatch.setenv("SG_TEST_OPERATOR_KEY", OPERATOR)
    with OpenAIStub() as stub, serve(stub.base_url, client_keys_env=VAR, api_key_env="SG_TEST_OPERATOR_KEY",
                                     forward_headers=("authorization", "openai-organization")) as proxy:
        client(proxy, ALPHA).chat.completions.create(model="m", messages=[image_message(png_url())])
        client(proxy, ALPHA).chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
        client(proxy, ALPHA).models.list()
        with pytest.raises(openai.AuthenticationError):
            client(proxy, OPERATOR).models.list()  # the upstream key is not a client key
    assert len(stub.requests) == 5 + 1  # (the stub records no /models call)
    assert {r.headers["authorization"] for r in stub.requests} == {f"Bearer {OPERATOR}"}

