"""What an attack returns (:class:`AttackResult`), reports per step (:class:`StepInfo`) and saves to resume
(:class:`AttackState`), and what :func:`~smoothguard.attacks.evaluate` measures (:class:`Evaluation`).

No torch here: images are :class:`~smoothguard.Media`, arrays are numpy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from smoothguard.errors import ConfigError
from smoothguard.media import Media

__all__ = ["AttackResult", "AttackState", "Evaluation", "PGDOutcome", "StepInfo", "hits"]


def hits(answer: str, targets: list[str]) -> bool:
    """Whether ``answer`` contains one of ``targets`` (case-insensitive, targets stripped)."""
    folded = answer.casefold()
    return any(t.strip().casefold() in folded for t in targets)


@dataclass(frozen=True)
class Evaluation:
    """Greedy answers of one backend to one image, per prompt, and whether each contains one of its targets.

    answers[i], hit[i]: prompt ``i``; success: every prompt hit; success_rate: the share that did;
    loss: mean teacher-forced NLL of the targets (nats per token, averaged over (prompt, target) pairs), or None.
    """

    prompts: list[str]
    targets: list[list[str]]
    answers: list[str]
    hit: list[bool]
    loss: float | None = None

    @property
    def success(self) -> bool:
        return bool(self.hit) and all(self.hit)

    @property
    def success_rate(self) -> float:
        return sum(self.hit) / len(self.hit) if self.hit else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"prompts": self.prompts, "targets": self.targets, "answers": self.answers, "hit": self.hit,
                "success": self.success, "success_rate": self.success_rate, "loss": self.loss}


@dataclass(kw_only=True)
class PGDOutcome:
    """What every PGD attack returns, whatever the medium (:class:`AttackResult` for images,
    :class:`~smoothguard.attacks.AudioAttackResult` for clips add the adversarial medium itself).

    original: the clean input as the model takes it (the model's resolution or rate). success: every prompt's greedy
    answer on the adversarial input contains one of its targets; steps: PGD steps taken; loss_curve[t]: the attack
    loss before step ``t + 1`` (nats per target token; with EOT, over noisy copies); final_loss: teacher-forced NLL
    of all (prompt, target) pairs on the adversarial input, noise-free; answers, hit: per prompt; linf: the
    L-infinity size of the perturbation in the medium's units (<= epsilon); first_success: the first step at which
    the greedy check succeeded (0: the clean input already did; None when never checked or never succeeded);
    elapsed: seconds; config: the attack's settings.
    """

    original: Media
    success: bool
    steps: int
    loss_curve: list[float]
    final_loss: float
    prompts: list[str]
    targets: list[list[str]]
    answers: list[str]
    hit: list[bool]
    linf: float
    epsilon: float | None
    first_success: int | None = None
    elapsed: float = 0.0
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def answer(self) -> str:
        """The greedy answer to the first prompt."""
        return self.answers[0]

    @property
    def success_rate(self) -> float:
        """The share of prompts whose answer contains a target (universal attacks)."""
        return sum(self.hit) / len(self.hit) if self.hit else 0.0

    def _summary(self) -> dict[str, Any]:
        """The JSON-serialisable fields every outcome shares (for ``to_dict``)."""
        return {"success": self.success, "success_rate": self.success_rate, "steps": self.steps,
                "first_success": self.first_success, "final_loss": self.final_loss, "loss_curve": self.loss_curve,
                "prompts": self.prompts, "targets": self.targets, "answers": self.answers, "hit": self.hit,
                "linf": self.linf, "epsilon": self.epsilon, "config": self.config}


@dataclass(kw_only=True)
class AttackResult(PGDOutcome):
    """The outcome of :meth:`PGDAttack.run <smoothguard.attacks.PGDAttack.run>` (the fields of
    :class:`PGDOutcome`, in [0, 1] pixel units).

    image: the adversarial image, 8-bit exact, at the model's post-resize resolution (``image.data`` is
    ``(H, W, 3)`` in [0, 1], multiples of 1/255); :meth:`save` writes it as PNG, and the PNG read back through
    the model's standard processor gives the model exactly what the attack measured.
    """

    image: Media

    @property
    def delta(self) -> np.ndarray:
        """``image - original``, float32 ``(H, W, 3)`` in [-epsilon, epsilon]."""
        return self.image.data - self.original.data

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the adversarial image as a PNG (lossless: the 8-bit pixels the attack measured); return the path."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(self.image.to_png_bytes())
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable summary (no pixels)."""
        return {**self._summary(), "linf_255": round(self.linf * 255, 3),
                "size": [self.image.height, self.image.width], "elapsed": self.elapsed}


@dataclass
class AttackState:
    """Everything needed to continue an attack where it stopped: :meth:`save` to a ``.npz`` file, :meth:`load`
    it back and pass it to ``PGDAttack.run(..., resume=state)`` with the same image, prompts, targets and settings.

    delta: the perturbation, float32 ``(3, H, W)``; step: steps done; loss_curve: so far; rng: the torch
    generator state (uint8); fingerprint: a hash of the image, prompts, targets and settings, checked on resume;
    first_success: as in :class:`AttackResult`.
    """

    delta: np.ndarray
    step: int
    loss_curve: list[float]
    rng: np.ndarray
    fingerprint: str
    first_success: int | None = None

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the state as an uncompressed ``.npz`` (no pickle); return the path."""
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        meta = {"step": self.step, "loss_curve": self.loss_curve, "fingerprint": self.fingerprint,
                "first_success": self.first_success}
        tmp = out.with_name(out.name + ".tmp")
        with tmp.open("wb") as handle:
            np.savez(handle, delta=self.delta.astype(np.float32), rng=self.rng.astype(np.uint8),
                     meta=np.frombuffer(json.dumps(meta).encode("utf-8"), dtype=np.uint8))
        os.replace(tmp, out)
        return out

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> AttackState:
        """Read a state written by :meth:`save`. Raises :class:`ConfigError` for a missing or malformed file."""
        try:
            with np.load(Path(path), allow_pickle=False) as data:
                meta = json.loads(bytes(data["meta"]).decode("utf-8"))
                return cls(delta=np.array(data["delta"], dtype=np.float32), step=int(meta["step"]),
                           loss_curve=[float(v) for v in meta["loss_curve"]], rng=np.array(data["rng"], np.uint8),
                           fingerprint=str(meta["fingerprint"]), first_success=meta.get("first_success"))
        except (OSError, KeyError, ValueError) as exc:
            raise ConfigError(f"cannot read the attack state {path}: {exc}") from exc


@dataclass(frozen=True)
class StepInfo:
    """What the progress callback receives after each step.

    step: steps done (1-based); steps: the budget; loss: the attack loss before this step's update; linf:
    ``max |delta|`` after it, in [0, 1] units; success: the greedy check after this step (None when not
    checked this step); answers: the greedy answers when checked; elapsed: seconds since the run started.
    :meth:`state` snapshots an :class:`AttackState` (for checkpoints).
    """

    step: int
    steps: int
    loss: float
    linf: float
    success: bool | None
    answers: list[str] | None
    elapsed: float
    _snapshot: Callable[[], AttackState] = field(repr=False, compare=False)

    def state(self) -> AttackState:
        return self._snapshot()
