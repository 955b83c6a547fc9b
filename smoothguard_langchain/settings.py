"""GuardSettings: every GuardConfig setting as a pydantic field, validated by GuardConfig itself.

The LangChain wrappers are pydantic models, so each guard setting is a field (``configurable_fields``,
``model_copy`` and ``with_config`` work on them). The fields are generated from ``dataclasses.fields(GuardConfig)``
(type, default, and the description from GuardConfig's docstring), so a new setting needs no change here.
Values are checked by :class:`smoothguard.GuardConfig` before pydantic sees them, so an invalid setting is a
:class:`~smoothguard.errors.ConfigError` at construction, with the same message as everywhere else in SmoothGuard.
"""

from __future__ import annotations

import dataclasses
import inspect
import re
import typing
import warnings
from typing import Any, ClassVar

from pydantic import BaseModel, Field, create_model

from smoothguard import GuardConfig, SmoothGuard
from smoothguard.errors import ConfigError, did_you_mean

__all__ = ["CONFIG_FIELDS", "GuardSettings"]

#: Names of every GuardConfig setting, in declaration order.
CONFIG_FIELDS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(GuardConfig))


def _descriptions() -> dict[str, str]:
    """``name: text`` entries of GuardConfig's docstring (continuation lines joined), by setting name."""
    out: dict[str, str] = {}
    name = None
    for line in inspect.cleandoc(GuardConfig.__doc__ or "").splitlines():
        match = re.match(r"^ {4}(\w+): (.*)$", line)
        if match and match.group(1) in CONFIG_FIELDS:
            name = match.group(1)
            out[name] = match.group(2).strip()
        elif name and line.startswith(" " * 8):
            out[name] += " " + line.strip()
        else:
            name = None
    return out


def _generated_fields() -> type[BaseModel]:
    hints = typing.get_type_hints(GuardConfig)
    docs = _descriptions()
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(GuardConfig):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        fields[f.name] = (hints[f.name], Field(default, description=docs.get(f.name, f"See GuardConfig.{f.name}.")))
    return create_model("GuardConfigFields", __base__=BaseModel, __doc__="GuardConfig's settings as fields.",
                        **fields)


class GuardSettings(_generated_fields()):  # type: ignore[misc]
    """Mixin: the guard settings as fields. Meanings, units and defaults are those of :class:`GuardConfig`."""

    #: Keyword arguments accepted for drop-in compatibility and ignored with a warning (subclasses extend it).
    _tolerated: ClassVar[frozenset[str]] = frozenset()
    #: Keyword arguments accepted and ignored silently (they cannot change anything here).
    _ignored: ClassVar[frozenset[str]] = frozenset()

    def __init__(self, **data: Any) -> None:
        super().__init__(**_checked(type(self), data))

    @property
    def guard_config(self) -> GuardConfig:
        """The settings as one validated :class:`GuardConfig`."""
        return GuardConfig(**{name: getattr(self, name) for name in CONFIG_FIELDS})

    def warmup(self) -> Any:
        """Load the embedder and the sentiment lexicon now (quietly), so the first guarded request does not pay
        for them (3-15 s on CPU). Returns ``self``, e.g. ``guard = ChatSmoothGuard(model=llm).warmup()``."""
        self._guard().warmup()
        return self

    def _guard(self) -> SmoothGuard:
        """A guard for one request. Cheap: the embedder is shared process-wide, so nothing heavy is rebuilt."""
        return SmoothGuard(self.guard_config)


def _checked(cls: type[GuardSettings], data: dict[str, Any]) -> dict[str, Any]:
    """``data`` with the guard settings validated and normalised by GuardConfig; unknown keys are errors."""
    settings = {k: v for k, v in data.items() if k in CONFIG_FIELDS}
    config = GuardConfig(**settings)  # ConfigError names the setting and the allowed values
    out = {**data, **{k: getattr(config, k) for k in settings}}
    known = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
    for key in [k for k in out if k not in known]:
        if key in cls._tolerated:
            warnings.warn(f"{cls.__name__} ignores {key!r}: set it on the wrapped model instead", UserWarning,
                          stacklevel=4)
        elif key not in cls._ignored:
            raise ConfigError(f"{cls.__name__} got an unknown setting {key!r}{did_you_mean(key, known)}")
        del out[key]
    return out
