"""Fixtures of the Hugging Face backend tests (shared inputs live in hf_cases.py)."""

import pytest


@pytest.fixture(autouse=True)
def _one_torch_thread(one_torch_thread):
    """Every test here runs with one torch thread (tests/conftest.py)."""
