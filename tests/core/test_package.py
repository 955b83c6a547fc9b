"""Packaging promises: a light import, the public names, the console script."""

import subprocess
import sys

import smoothguard
from smoothguard.cli import main


def test_import_is_light_and_fast():
    code = (
        "import sys, time; t = time.perf_counter(); import smoothguard; t = time.perf_counter() - t; "
        "heavy = [m for m in ('torch', 'sklearn', 'sentence_transformers', 'scipy', 'nltk', 'transformers', "
        "'langchain_core', 'llama_index') if m in sys.modules]; print(t, heavy)"
    )
    times = []
    for _ in range(3):  # best of three: the first run may pay for a cold disk cache
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
        seconds, heavy = out.split(" ", 1)
        assert heavy.strip() == "[]"
        times.append(float(seconds))
    assert min(times) < 0.5


def test_public_names():
    for name in ("SmoothGuard", "GuardConfig", "GuardResult", "Media", "GuardFlagged", "__version__"):
        assert hasattr(smoothguard, name)
    from smoothguard.errors import ConfigError, GenerationError, MediaError, SmoothGuardError

    assert all(issubclass(e, SmoothGuardError) for e in (ConfigError, GenerationError, MediaError))


def test_cli_help_and_version(capsys):
    assert main([]) == 0
    assert "smoothguard" in capsys.readouterr().out
    out = subprocess.run([sys.executable, "-m", "smoothguard.cli", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and smoothguard.__version__ in out.stdout
    out = subprocess.run([sys.executable, "-m", "smoothguard.cli", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "adversarial" in out.stdout


def test_console_script_is_installed():
    from pathlib import Path

    script = Path(sys.executable).parent / "smoothguard"
    out = subprocess.run([str(script), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and smoothguard.__version__ in out.stdout
