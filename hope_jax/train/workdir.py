"""Run directory conventions: the lock, the resolved config file and the checkpoint metadata.

A run claims its workdir with `WorkdirLock` (an `flock` on `<workdir>/.lock`, released by the
kernel when the process dies, so a lock left by a killed trainer never blocks), checks an existing
`config.json` against the config (`check_config`), and writes its own config only once everything
else is ready (`write_config`): a start that fails leaves the workdir as it was.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil

import jax

from hope_jax.config import Config
from hope_jax.train.checkpoint import CheckpointError, model_diff

CONFIG_FILE = "config.json"
LOCK_FILE = ".lock"


class WorkdirError(RuntimeError):
    """The workdir cannot be used: not creatable, not a directory, or in use by another run."""


def run_meta(cfg: Config, tokenizer) -> dict:
    """What a checkpoint records about its run: model config, tokenizer identity and the
    optimizer settings (named when a resume's optimizer state does not fit)."""
    d = json.loads(json.dumps(cfg.to_dict()))
    return {"model": d["model"], "optim": d["optim"], "tokenizer": tokenizer.name,
            "vocab_size": tokenizer.vocab_size}


class WorkdirLock:
    """Creates `workdir` if needed and holds an exclusive lock on it (process 0 only).

    `release(started)` unlocks; after a failed start (`started=False`) a workdir this lock created
    is removed again (it holds nothing but the lock file).
    """

    def __init__(self, workdir: str):
        self.workdir, self.created, self._fd = workdir, False, None
        if os.path.exists(workdir) and not os.path.isdir(workdir):
            raise WorkdirError(f"--workdir={workdir} exists and is not a directory")
        if jax.process_index() != 0:
            return
        if not os.path.isdir(workdir):
            try:
                os.makedirs(workdir)
            except OSError as e:
                raise WorkdirError(f"cannot create --workdir={workdir}: {e.strerror} "
                                   f"({e.filename or workdir})") from e
            self.created = True
        path = os.path.join(workdir, LOCK_FILE)
        try:
            self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            self.release(False)
            raise WorkdirError(f"cannot write in --workdir={workdir}: {e.strerror}") from e
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            with contextlib.suppress(OSError):
                owner = os.pread(self._fd, 64, 0).decode(errors="replace").strip()
            os.close(self._fd)
            self._fd = None
            raise WorkdirError(
                f"--workdir={workdir} is in use by another trainer (pid {owner or '?'}); wait for "
                "it to finish or use another --workdir") from None
        os.ftruncate(self._fd, 0)
        os.pwrite(self._fd, f"{os.getpid()}\n".encode(), 0)

    def release(self, started: bool) -> None:
        if self._fd is not None:
            os.close(self._fd)  # drops the flock
            self._fd = None
        if self.created and not started:
            names = set(os.listdir(self.workdir)) if os.path.isdir(self.workdir) else set()
            if names <= {LOCK_FILE}:
                shutil.rmtree(self.workdir, ignore_errors=True)


def check_config(cfg: Config, workdir: str) -> None:
    """Refuses a workdir whose `config.json` holds a different model or tokenizer."""
    path = os.path.join(workdir, CONFIG_FILE)
    if not os.path.exists(path):
        return
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is unreadable ({e}); nothing was changed") from e
    current = json.loads(cfg.to_json())
    problems = model_diff(saved.get("model", {}), current["model"], "workdir")
    for key in ("tokenizer", "tokenizer_path"):
        if saved.get("data", {}).get(key) != current["data"][key]:
            problems.append(f"config.data.{key}: workdir {saved.get('data', {}).get(key)!r} "
                            f"vs config {current['data'][key]!r}")
    if problems:
        raise CheckpointError(
            f"{workdir} holds a run with a different model/tokenizer ({problems[0]}); use another "
            "--workdir or matching settings. Nothing was changed."
        )


def write_config(cfg: Config, workdir: str) -> None:
    """Writes the resolved config: `config.json` for a new run, never overwritten; a resume whose
    run settings (steps, lr, ...) changed writes `config.resume.json` beside it."""
    if jax.process_index() != 0:
        return
    path, text = os.path.join(workdir, CONFIG_FILE), cfg.to_json()
    if os.path.exists(path):
        with open(path) as f:
            if json.load(f) == json.loads(text):
                return
        path = os.path.join(workdir, "config.resume.json")
    with open(path, "w") as f:
        f.write(text + "\n")
