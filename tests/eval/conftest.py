"""Shared fixtures: small offline datasets in each public format, written once per session."""

from __future__ import annotations

import pytest

from smoothguard.eval.datasets import write_llavabench, write_mmsafety, write_pope


@pytest.fixture(scope="session")
def standin(tmp_path_factory):
    """``{"pope": dir, "mmsafety": dir, "llavabench": dir}`` of generated data (read-only for tests)."""
    root = tmp_path_factory.mktemp("standin")
    return {"pope": write_pope(root / "pope", n_images=8, seed=1),
            "mmsafety": write_mmsafety(root / "mmsafety", n_per_scenario=2, seed=1),
            "llavabench": write_llavabench(root / "llavabench", n=8, seed=1)}


@pytest.fixture
def copy_of(tmp_path):
    """A writable copy of a generated dataset folder, for tests that break it."""
    import shutil

    count = iter(range(1000))

    def copy(src):
        dst = tmp_path / f"copy{next(count)}-{src.name}"
        shutil.copytree(src, dst)
        return dst

    return copy
