"""Helpers shared by the `train.py` and `eval.py` entry points (flag parsing lives there)."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from typing import Any

from hope_jax.config import Config, ConfigError, validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "hope_small.py")


def user_errors() -> tuple[type[Exception], ...]:
    """Exception types that mean bad input (reported as one line, exit code 2)."""
    from hope_jax.data import DataError
    from hope_jax.train.checkpoint import CheckpointError
    from hope_jax.train.loop import TrainingError

    return (ConfigError, DataError, CheckpointError, TrainingError, FileNotFoundError)


def run_guarded(fn: Callable[..., Any], *args, **kwargs) -> Any:
    """Runs `fn`; a user error becomes `error: <message>` on stderr and exit status 2."""
    try:
        return fn(*args, **kwargs)
    except user_errors() as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def load_config(raw) -> Config:
    return run_guarded(validate, raw)


def load_workdir_config(workdir: str) -> Config:
    """The resolved config a run saved in its workdir (eval)."""
    from hope_jax.train.workdir import CONFIG_FILE

    if not os.path.isdir(workdir):
        raise FileNotFoundError(f"--workdir={workdir} does not exist (train a model there first)")
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} is missing: {workdir} is not a hope_jax run directory")
    with open(path) as f:
        return validate(json.load(f))


def print_json(obj: dict) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=float))
