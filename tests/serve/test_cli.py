"""``smoothguard serve``'s arguments, settings precedence, and that the core never imports the web stack."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

import pytest

from smoothguard.errors import ConfigError
from smoothguard.serve import cli


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="smoothguard serve")
    cli.configure(parser)
    return parser.parse_args(argv)


def test_flags_override_the_config_file(tmp_path, monkeypatch):
    monkeypatch.setenv("SG_CLI_KEY", "sk-cli-secret-1")
    path = tmp_path / "serve.toml"
    path.write_text('sigma = 0.2\nn_samples = 9\n[serve]\nupstream = "http://file:1/v1"\nmax_body_bytes = 1000\n'
                    '[serve.limits]\nsigma = [0.1, 0.3]\n')
    args = parse("--config", str(path), "--n-samples", "7", "--upstream", "http://vllm:8001", "--temperature", "client",
                 "--allow-override", "sigma,n_samples", "--limit", "n_samples=3:9", "--api-key-env", "SG_CLI_KEY",
                 "--no-warmup", "--time-budget", "2.5")
    assert args.func is cli.run
    config, settings = cli.build_settings(args)
    assert (config.sigma, config.n_samples) == (0.2, 7)
    assert settings.upstream == "http://vllm:8001/v1" and settings.max_body_bytes == 1000
    assert settings.temperature is None and settings.overridable == ("sigma", "n_samples") and not settings.warmup
    assert settings.limits["sigma"] == (0.1, 0.3) and settings.limits["n_samples"] == (3, 9)
    assert settings.resolve_api_key() == "sk-cli-secret-1" and config.time_budget == 2.5
    assert cli.build_settings(parse("--upstream", "http://h"))[0].time_budget is None


@pytest.mark.parametrize("argv", [(), ("--upstream", "http://h", "--limit", "n_samples=3"),
                                  ("--upstream", "http://h", "--sigma", "-1"),
                                  ("--upstream", "http://h", "--time-budget", "0"),
                                  ("--upstream", "http://h", "--api-key-env", "SG_SURELY_UNSET_VAR")])
def test_invalid_settings_exit_2_with_a_message(argv, capsys):
    with pytest.raises(ConfigError):
        cli.build_settings(parse(*argv))
    assert cli.run(parse(*argv)) == 2
    assert capsys.readouterr().err.startswith("smoothguard serve: ")


def test_print_config_leaves_the_key_out(monkeypatch, capsys):
    monkeypatch.setenv("SG_CLI_KEY", "sk-cli-secret-1")
    assert cli.run(parse("--upstream", "http://h:1", "--api-key-env", "SG_CLI_KEY", "--print-config")) == 0
    out = capsys.readouterr().out
    printed = json.loads(out)
    assert printed["serve"]["upstream"] == "http://h:1/v1" and printed["guard"]["n_samples"] == 11
    assert "sk-cli-secret-1" not in out


def test_run_starts_uvicorn(monkeypatch):
    import uvicorn

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(app=app, **kw))
    assert cli.run(parse("--upstream", "http://h:1", "--port", "9123", "--sigma", "0.15", "--no-warmup")) == 0
    assert seen["port"] == 9123 and seen["host"] == "127.0.0.1"
    assert seen["app"].state.proxy.config.sigma == 0.15 and seen["app"].state.proxy.freeze_heap
    assert "smoothguard" in seen["log_config"]["loggers"]

    from smoothguard.serve.app import ENV_VAR, app_from_environment

    monkeypatch.delenv(ENV_VAR, raising=False)
    assert cli.run(parse("--upstream", "http://h:1", "--workers", "2", "--n-samples", "5")) == 0
    assert seen["app"] == "smoothguard.serve.app:app_from_environment" and seen["factory"] and seen["workers"] == 2
    assert app_from_environment().state.proxy.config.n_samples == 5
    assert app_from_environment().state.proxy.freeze_heap


def test_help_mentions_the_upstream():
    parser = argparse.ArgumentParser(prog="smoothguard serve")
    cli.configure(parser)
    text = parser.format_help()
    assert "--upstream" in text and "--n-samples" in text and "--sigma" in text and "vLLM" in text


def test_the_core_and_the_serve_settings_never_import_the_web_stack():
    code = ("import sys, smoothguard, smoothguard.serve, smoothguard.serve.cli; "
            "bad = [m for m in ('starlette', 'fastapi', 'uvicorn', 'httpx') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_wired_into_the_smoothguard_command(monkeypatch, capsys):
    import smoothguard.cli

    by_module = any(isinstance(entry[1], str) for entry in smoothguard.cli._SUBCOMMANDS.values())
    entry = (cli.HELP, "smoothguard.serve.cli" if by_module else cli.configure)
    monkeypatch.setattr(smoothguard.cli, "_SUBCOMMANDS", {"serve": entry})  # only ours: the others are not under test
    assert smoothguard.cli.main(["serve", "--upstream", "http://h:9", "--n-samples", "5", "--print-config"]) == 0
    assert json.loads(capsys.readouterr().out)["guard"]["n_samples"] == 5
    with pytest.raises(SystemExit) as info:
        smoothguard.cli.main(["serve", "--help"])
    assert info.value.code == 0 and "--upstream" in capsys.readouterr().out


def test_image_resize_from_the_config_file_and_the_flag(tmp_path, capsys):
    path = tmp_path / "serve.toml"
    path.write_text('image_resize = [1024, 768]\nallow_private_fetch = true\n[serve]\nupstream = "http://h:1/v1"\n')
    config, _ = cli.build_settings(parse("--config", str(path)))
    assert config.image_resize == (1024, 768) and config.allow_private_fetch
    for flag, rule in (("768", 768), ("1024x768", (1024, 768)), ("qwen2-vl", "qwen2-vl"), ("none", "none")):
        assert cli.build_settings(parse("--config", str(path), "--image-resize", flag))[0].image_resize == rule
    with pytest.raises(SystemExit):
        parse("--upstream", "http://h", "--image-resize", "huge")
    assert "image_resize must be one of" in capsys.readouterr().err
