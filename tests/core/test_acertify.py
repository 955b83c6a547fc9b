"""SmoothGuard.acertify: certify through ``backend.agenerate``, with the same result as certify for a seed."""

from __future__ import annotations

import asyncio
import dataclasses

import numpy as np
import pytest

from smoothguard import CertifyResult, Media, SmoothGuard


def _answers(variants, threshold=0.55):
    return ["The image is bright." if float(m[0].to_array().mean()) > threshold else "The image is dark."
            for m in variants]


class SyncBackend:
    def generate(self, prompt, variants):
        return _answers(variants)


class AsyncBackend:
    """Answers only through ``agenerate`` (``generate`` must not be used), on the caller's event loop."""

    def __init__(self):
        self.loops, self.calls = set(), []

    def generate(self, prompt, variants):
        raise AssertionError("acertify must go through agenerate")

    async def agenerate(self, prompt, variants):
        self.loops.add(asyncio.get_running_loop())
        self.calls.append(len(variants))
        await asyncio.sleep(0)
        return _answers(variants)


def _image():
    return Media.image(np.full((4, 4, 3), 0.552, dtype=np.float32))  # near the threshold: the answers split


def _without_timings(result: CertifyResult) -> dict:
    return {k: v for k, v in dataclasses.asdict(result).items() if k != "timings"}


async def test_acertify_matches_certify_for_the_same_seed():
    guard = SmoothGuard(sigma=0.02, sigma_space="pixel", seed=7)
    sync = guard.certify(SyncBackend(), "Bright or dark?", images=[_image()], n0=10, n=120, alpha=0.01,
                         batch_size=50)
    backend = AsyncBackend()
    result = await guard.acertify(backend, "Bright or dark?", images=[_image()], n0=10, n=120, alpha=0.01,
                                  batch_size=50)
    assert isinstance(result, CertifyResult)
    assert 0 < sync.count < 120  # the answers really split, so a different noise draw would show
    assert _without_timings(result) == _without_timings(sync)
    assert backend.calls == [10, 50, 50, 20] and backend.loops == {asyncio.get_running_loop()}


async def test_acertify_records_failed_batches_as_certify_does():
    class Failing(AsyncBackend):
        async def agenerate(self, prompt, variants):
            if len(self.calls) == 1:  # the first estimation batch fails as a whole
                self.calls.append(len(variants))
                raise ConnectionError("upstream down")
            return await super().agenerate(prompt, variants)

    guard = SmoothGuard(sigma=0.02, sigma_space="pixel", seed=7)
    result = await guard.acertify(Failing(), "?", images=[_image()], n0=10, n=100, alpha=0.01, batch_size=50)
    assert result.failed == 50 and result.count <= 50 and result.n_used == 110


async def test_acertify_validates_like_certify():
    from smoothguard.errors import ConfigError

    with pytest.raises(ConfigError, match="n0"):
        await SmoothGuard(seed=0).acertify(AsyncBackend(), "?", images=[_image()], n0=0)
