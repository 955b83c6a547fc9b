"""Fixtures of the reliability suite: markers, one torch thread, and the corpus table printed at the end.

Markers (registered here, as pyproject.toml belongs to the lead): ``fuzz`` (the codec property tests; their
example count comes from ``SMOOTHGUARD_FUZZ_EXAMPLES``, default 200). The ``slow`` tests of this directory (the
1,000-request leak runs beyond the core one, about 50 s together) are skipped unless selected with ``-m slow``
or ``SMOOTHGUARD_RELIABILITY_SLOW=1``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

TABLE_KEY = pytest.StashKey[dict]()
LAYERS = ("Media", "ChatSmoothGuard", "SmoothGuardLLM", "proxy")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "fuzz: hypothesis property tests of the content-block codecs "
                                       "(SMOOTHGUARD_FUZZ_EXAMPLES examples each, default 200)")
    config.stash[TABLE_KEY] = {"rows": {}, "path": None, "figures": []}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if "slow" in (config.getoption("markexpr") or "") or os.environ.get("SMOOTHGUARD_RELIABILITY_SLOW") == "1":
        return
    here = Path(__file__).parent
    skip = pytest.mark.skip(reason="slow: run with -m slow or SMOOTHGUARD_RELIABILITY_SLOW=1")
    for item in items:
        if item.get_closest_marker("slow") and here in Path(str(item.fspath)).parents:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Every test here runs with one torch thread (tests/conftest.py)."""


@pytest.fixture(scope="session")
def corpus_table(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """``record(case, layer, outcome, seconds)``; the table is written under the session's tmp dir at the end
    and printed in the terminal summary (whatever ``-s`` / ``-q`` say)."""
    state = request.config.stash[TABLE_KEY]
    rows: dict = state["rows"]

    def record(case, layer: str, outcome: str, seconds: float) -> None:
        rows.setdefault(case.name, {"expect": case.expect, "kind": case.kind})[layer] = (outcome, seconds)

    yield record
    path = tmp_path_factory.getbasetemp() / "reliability-corpus.txt"
    path.write_text("\n".join(_table(rows)) + "\n", encoding="utf-8")
    state["path"] = path


@pytest.fixture(scope="session")
def figures(request: pytest.FixtureRequest):
    """``note(line)``: a measured figure (leaks, fuzz counts, ...) for the terminal summary."""
    return request.config.stash[TABLE_KEY]["figures"].append


def _table(rows: dict) -> list[str]:
    width = max((len(name) for name in rows), default=10)
    head = f"{'case':<{width}}  {'expect':<6}  " + "  ".join(f"{layer:<22}" for layer in LAYERS) + "  max ms"
    lines = [head, "-" * len(head)]
    totals = {layer: {} for layer in LAYERS}
    for name, row in rows.items():
        cells, slowest = [], 0.0
        for layer in LAYERS:
            outcome, seconds = row.get(layer, ("-", 0.0))
            cells.append(f"{outcome[:22]:<22}")
            slowest = max(slowest, seconds)
            key = outcome.split(" ")[0]
            totals[layer][key] = totals[layer].get(key, 0) + 1
        lines.append(f"{name:<{width}}  {row['expect']:<6}  " + "  ".join(cells) + f"  {slowest * 1000:6.0f}")
    lines.append("-" * len(head))
    for layer in LAYERS:
        summary = ", ".join(f"{k}: {v}" for k, v in sorted(totals[layer].items()))
        lines.append(f"{layer}: {summary}")
    return lines


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    state = config.stash.get(TABLE_KEY, None)
    if state and state["figures"]:
        terminalreporter.section("reliability figures")
        for line in state["figures"]:
            terminalreporter.write_line(line)
    if not state or not state["rows"]:
        return
    terminalreporter.section("malformed-media corpus")
    path: Path | None = state["path"]
    lines = path.read_text(encoding="utf-8").splitlines() if path else _table(state["rows"])
    for line in lines:
        terminalreporter.write_line(line)
    if path:
        terminalreporter.write_line(f"(table written to {path})")
