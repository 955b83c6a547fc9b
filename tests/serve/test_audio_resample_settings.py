"""``smoothguard serve``'s ``audio_resample``: the flag, the config-file key, and that no client may change it."""

from __future__ import annotations

import argparse

import httpx
import pytest
from fakes.openai_server import OpenAIStub
from serve_support import SMALL, wav_b64

from smoothguard.errors import ConfigError
from smoothguard.serve import cli
from smoothguard.serve.settings import NEVER_OVERRIDABLE, ServeSettings


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="smoothguard serve")
    cli.configure(parser)
    return parser.parse_args(argv)


def test_audio_resample_from_the_config_file_and_the_flag(tmp_path, capsys):
    path = tmp_path / "serve.toml"
    path.write_text('audio_resample = 22050\n[serve]\nupstream = "http://h:1/v1"\n')
    assert cli.build_settings(parse("--config", str(path)))[0].audio_resample == 22050
    assert cli.build_settings(parse("--upstream", "http://h:1/v1"))[0].audio_resample == "auto"
    for flag, value in (("16000", 16000), ("none", "none"), ("auto", "auto")):
        assert cli.build_settings(parse("--config", str(path), "--audio-resample", flag))[0].audio_resample == value
    with pytest.raises(SystemExit):
        parse("--upstream", "http://h", "--audio-resample", "16kHz")
    assert "audio_resample must be 'auto', 'none' or a sample rate in Hz" in capsys.readouterr().err
    path.write_text('audio_resample = 100\n[serve]\nupstream = "http://h:1/v1"\n')
    with pytest.raises(ConfigError, match=r"\[1000, 384000\]"):
        cli.build_settings(parse("--config", str(path)))


def test_no_client_may_change_audio_resample(serve):
    assert "audio_resample" in NEVER_OVERRIDABLE
    with pytest.raises(ConfigError, match="can never be overridden"):
        ServeSettings(upstream="http://h:1/v1", overridable=("audio_resample",))
    audio = {"type": "input_audio", "input_audio": {"data": wav_b64(rate=48000), "format": "wav"}}
    body = {"model": "m", "messages": [{"role": "user", "content": [audio]}],
            "smoothguard": {"audio_resample": "none"}}
    with OpenAIStub() as stub, serve(stub.base_url, SMALL) as proxy:
        response = httpx.post(proxy.base_url + "/chat/completions", json=body, timeout=30)
    assert response.status_code == 400 and response.json()["error"]["code"] == "smoothguard_override_not_allowed"
    assert stub.requests == []
