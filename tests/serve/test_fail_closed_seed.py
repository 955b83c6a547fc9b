"""A guard that fails closed, item 2: clients cannot choose the noise. ``seed`` is off the default override list;
an operator who allows it, or fixes a seed for the deployment, is warned at startup."""

from __future__ import annotations

import argparse
import json
import logging

import openai
import pytest
from fakes.openai_server import OpenAIStub
from serve_support import image_message, png_url

from smoothguard import GuardConfig
from smoothguard.serve import cli
from smoothguard.serve.errors import ProxyError
from smoothguard.serve.settings import DEFAULT_OVERRIDABLE, ServeSettings, apply_overrides, startup_warnings

FRESH = GuardConfig(n_samples=5)  # no fixed seed


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="smoothguard serve")
    cli.configure(parser)
    return parser.parse_args(argv)


def warnings_logged(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name.startswith("smoothguard") and r.levelno == logging.WARNING]


def test_seed_is_not_overridable_by_default():
    assert "seed" not in DEFAULT_OVERRIDABLE
    with pytest.raises(ProxyError) as info:
        apply_overrides(FRESH, {"seed": 7}, ServeSettings(upstream="http://h"))
    error = info.value
    assert (error.status, error.code, error.param) == (400, "smoothguard_override_not_allowed", "smoothguard.seed")
    assert "'seed'" in error.message
    allowed = ServeSettings(upstream="http://h", overridable=("sigma", "seed"))
    assert apply_overrides(FRESH, {"seed": 7}, allowed).seed == 7  # an operator may still allow it


def test_a_client_seed_is_a_400_naming_it(serve):
    with OpenAIStub() as stub, serve(stub.base_url, FRESH) as proxy:
        c = openai.OpenAI(base_url=proxy.base_url, api_key="k", max_retries=0)
        with pytest.raises(openai.BadRequestError) as info:
            c.chat.completions.create(model="m", messages=[image_message(png_url())],
                                      extra_body={"smoothguard": {"seed": 7}})
    assert info.value.status_code == 400 and info.value.body["param"] == "smoothguard.seed"
    assert "'seed'" in info.value.body["message"] and stub.requests == []


def test_startup_warnings():
    assert startup_warnings(FRESH, ServeSettings(upstream="http://h")) == []
    [fixed] = startup_warnings(FRESH.replace(seed=3), ServeSettings(upstream="http://h"))
    assert "seed" in fixed and "predictable" in fixed and "reproducible" in fixed
    [clients] = startup_warnings(FRESH, ServeSettings(upstream="http://h", overridable=("sigma", "seed")))
    assert "seed" in clients and "clients" in clients and "fix the noise" in clients


def test_the_warnings_are_logged_at_startup(serve, caplog):
    caplog.set_level(logging.WARNING)
    with OpenAIStub() as stub:
        with serve(stub.base_url, FRESH):
            pass
        assert warnings_logged(caplog) == []
        with serve(stub.base_url, FRESH.replace(seed=3)):
            pass
        assert any("predictable" in w for w in warnings_logged(caplog))
        caplog.clear()
        with serve(stub.base_url, FRESH, overridable=("sigma", "seed")):
            pass
        assert any("fix the noise" in w for w in warnings_logged(caplog))


def test_print_config_warns_about_a_fixed_seed(tmp_path, capsys):
    assert cli.run(parse("--upstream", "http://h:1", "--print-config")) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["warnings"] == [] and "seed" not in err
    assert cli.run(parse("--upstream", "http://h:1", "--seed", "3", "--print-config")) == 0
    out, err = capsys.readouterr()
    assert "predictable" in err and "reproducible" in err
    assert any("predictable" in w for w in json.loads(out)["warnings"])
    path = tmp_path / "sg.toml"
    path.write_text('seed = 5\n[serve]\nupstream = "http://h:1/v1"\noverridable = ["sigma", "seed"]\n')
    assert cli.run(parse("--config", str(path), "--print-config")) == 0
    out, err = capsys.readouterr()
    assert "predictable" in err and "fix the noise" in err
    assert len(json.loads(out)["warnings"]) == 2
    assert cli.run(parse("--upstream", "http://h:1", "--allow-override", "sigma,seed", "--print-config")) == 0
    assert "fix the noise" in capsys.readouterr().err

