"""The two pieces every config section uses: the error type and the field declaration helper."""

from __future__ import annotations

import dataclasses


class ConfigError(ValueError):
    """A configuration value is unknown, of the wrong type, or impossible."""


def field(default, *, choices=None, positive=False, nonneg=False, help=""):
    """A dataclass field carrying validation metadata read by `hope_jax.config.validate`.

    Args:
      default: default value (tuples for list-valued fields).
      choices: allowed values, or None.
      positive: value must be > 0.
      nonneg: value must be >= 0.
      help: one-line description, shown in docs/CONFIG.md.
    """
    meta = {"choices": choices, "positive": positive, "nonneg": nonneg, "help": help}
    return dataclasses.field(default=default, metadata=meta)
