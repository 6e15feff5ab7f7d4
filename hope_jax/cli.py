"""What `train.py` and `eval.py` share: flag parsing and error reporting around their `main`.

A user error (bad flag or config key, bad data, unusable workdir or checkpoint, a failed write,
Ctrl-C) is reported as one line `error: ...` on stderr with exit status 2 (130 for Ctrl-C);
`--verbose` or the environment variable HOPE_JAX_VERBOSE=1 shows the traceback instead. stdout
carries only the JSON result. Library chatter (orbax logs, the late asyncio/tensorstore callbacks
of a failed orbax write) is silenced unless verbose.
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import sys
from collections.abc import Callable
from typing import Any

from absl import app, flags

from hope_jax.config import Config, ConfigError, validate

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CONFIG = os.path.join(ROOT, "configs", "hope_small.py")

flags.DEFINE_bool("verbose", False, "Show tracebacks and library logs (or HOPE_JAX_VERBOSE=1).")


class UsageError(ValueError):
    """A command-line flag is missing, empty or not one of its choices."""


def verbose(argv=None) -> bool:
    if os.environ.get("HOPE_JAX_VERBOSE", "") not in ("", "0"):
        return True
    if argv is not None:
        return any(a in ("--verbose", "-verbose", "--verbose=true", "--verbose=True")
                   for a in argv)
    return flags.FLAGS.is_parsed() and flags.FLAGS.verbose


def user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean bad input or environment (reported as one line)."""
    from hope_jax.data import DataError
    from hope_jax.train.checkpoint import CheckpointError
    from hope_jax.train.loop import TrainingError
    from hope_jax.train.workdir import WorkdirError

    return (ConfigError, DataError, CheckpointError, TrainingError, WorkdirError, UsageError,
            OSError)


def _fail(message: str, code: int = 2):
    lines = [ln.strip() for ln in str(message).splitlines() if ln.strip()]
    print(f"error: {'; '.join(lines)}", file=sys.stderr, flush=True)
    sys.exit(code)


def run_guarded(fn: Callable[..., Any], *args, **kwargs) -> Any:
    """Runs `fn`; a user error becomes `error: <message>` on stderr and exit status 2."""
    if verbose():
        return fn(*args, **kwargs)
    try:
        return fn(*args, **kwargs)
    except KeyboardInterrupt:
        _fail("interrupted (Ctrl-C): stopped without a new checkpoint", 130)
    except user_errors() as e:
        _fail(str(e) if not isinstance(e, OSError) or not e.strerror else _os_error(e))


def _os_error(e: OSError) -> str:
    return f"{e.strerror}: {e.filename}" if e.filename else e.strerror


def _flag_error(e: BaseException, argv: list[str]) -> str:
    """One line for an exception raised while parsing flags (config file, overrides)."""
    arg = e
    while isinstance(arg, BaseException) and arg.args:  # ml_collections nests KeyError in
        arg = arg.args[0]                                # AttributeError
    text = str(arg)
    m = re.match(r"'(\w+)'", text)
    if isinstance(e, (KeyError, AttributeError)) and m:
        key = m.group(1)
        flag = next((a.split("=")[0] for a in argv
                     if a.startswith("--config.") and key in a.split("=")[0].split(".")), None)
        hint = re.search(r'Did you mean "(\w+)"', text)
        return (f"unknown config key {key!r}" + (f" in {flag}" if flag else "")
                + (f" (did you mean {hint.group(1)!r}?)" if hint else ""))
    if "Failed loading config file" in text:
        path = ([a.split("=", 1)[1] for a in argv if a.startswith("--config=")] or [""])[-1]
        cause = [ln.strip() for ln in text.splitlines() if ln.strip()][-1]
        return f"cannot load config file {path!r}: {cause}"
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__


def _parse_flags(argv: list[str]) -> list[str]:
    try:
        return flags.FLAGS(argv)
    except Exception as e:
        if verbose(argv):
            raise
        _fail(_flag_error(e, argv))


class _QuietLibraries(logging.Filter):
    """Drops orbax's log records (progress notes and warnings; failures are reported by us)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "orbax" not in record.pathname


def _drop_late_callback_errors(hook):
    """A sys.unraisablehook that drops the leftovers of a failed orbax read/write: tensorstore
    completing the rest of it calls back into the asyncio loop orbax has already closed ('Event
    loop is closed'), and orbax's abandoned coroutines raise when collected. The failure itself is
    reported by us as one line."""

    def unraisablehook(u):
        code = getattr(u.object, "cr_code", None)
        late = u.exc_type is RuntimeError and str(u.exc_value) == "Event loop is closed"
        if not (late or (code is not None and "orbax" in code.co_filename)):
            hook(u)

    return unraisablehook


def run(main: Callable[[], dict]) -> None:
    """The entry point of a script: parse flags, run `main`, print its JSON result."""

    def _main(argv):
        if len(argv) > 1:
            _fail(f"unexpected argument {argv[1]!r} (flags are --name=value)")
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.WARNING)  # orbax logs every file op at INFO
        if not verbose():
            logging.getLogger("absl").addFilter(_QuietLibraries())
            sys.unraisablehook = _drop_late_callback_errors(sys.unraisablehook)
            logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # "exception never retrieved"
            # of orbax's writes after a failed save we already reported
        result = run_guarded(main)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # done: a late Ctrl-C has nothing to abort
        print_json(result)

    app.run(_main, flags_parser=_parse_flags)


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
    print(json.dumps(obj, indent=2, sort_keys=True, default=float), flush=True)
