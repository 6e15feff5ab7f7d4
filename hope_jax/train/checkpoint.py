"""Orbax checkpointing of the whole run: train state, data-iterator state and run metadata.

Layout: `<workdir>/checkpoints/<step>/{state,data,meta}`. `meta` holds the resolved model config
and the tokenizer identity, so a checkpoint is never silently restored into a different model or
tokenizer. Saves are asynchronous and keep the last `keep` steps plus the newest one known good;
nothing here deletes a checkpoint except that rotation. A checkpoint that must leave the way
(proven bad, or newer than an explicit `--restore_step`) is moved to `checkpoints_aside/<step>`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import re
import shutil
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from hope_jax.config_legacy import saved_model
from hope_jax.models.config import ModelConfig

ASIDE_DIR = "checkpoints_aside"  # checkpoints moved out of the way (never deleted), by step


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not fit the current config."""


def model_defaults() -> dict:
    """The model section of a default config, as it appears in config.json / checkpoint meta."""
    return json.loads(json.dumps(dataclasses.asdict(ModelConfig())))


# Model settings that choose how the same math runs (attention kernel, query blocking), never the
# parameters or the function: a run may change them on resume (e.g. cudnn on GPU, xla on CPU).
RUNTIME_MODEL_KEYS = frozenset({"attn_impl", "attn_q_block"})


def model_diff(saved: dict, current: dict, label: str = "checkpoint") -> list[str]:
    """`config_diff` of two model sections, ignoring RUNTIME_MODEL_KEYS; a section saved before
    keys were renamed is read in today's names, one that predates a key with the value it ran
    with (`config_legacy.saved_model`)."""
    saved = saved_model(saved)
    saved, current = ({k: v for k, v in d.items() if k not in RUNTIME_MODEL_KEYS}
                      for d in (saved, current))
    return config_diff(saved, current, "config.model", label, model_defaults())


def config_diff(saved: dict, current: dict, prefix: str, label: str = "checkpoint",
                defaults: dict | None = None) -> list[str]:
    """Lines `prefix.key: <label> a vs config b` for every differing leaf of two config dicts.

    A key the saved dict lacks (a setting added to the schema after the run was written) matches
    when the current value is the schema default from `defaults` (same nesting)."""
    out, defaults = [], defaults or {}
    for k in sorted(set(saved) | set(current)):
        a, b = saved.get(k, "<absent>"), current.get(k, "<absent>")
        d = defaults.get(k, "<absent>")
        if isinstance(b, dict) and (isinstance(a, dict) or a == "<absent>"):
            out += config_diff(a if isinstance(a, dict) else {}, b, f"{prefix}.{k}", label,
                               d if isinstance(d, dict) else None)
        elif not _same(a, b) and not (a == "<absent>" and _same(d, b)):
            out.append(f"{prefix}.{k}: {label} {a!r} vs config {b!r}")
    return out


def _same(a, b) -> bool:
    """Equal, with JSON lists and tuples of the same items counted equal."""
    seq = (list, tuple)
    return a == b or (isinstance(a, seq) and isinstance(b, seq) and tuple(a) == tuple(b))


def _first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).split(" See full TensorStore details")[0].strip()
    return f"{type(e).__name__}: {text.splitlines()[0][:limit] if text else ''}"


def _write_failure(e: BaseException) -> str:
    """The root cause of a failed write (e.g. 'No space left on device'), found anywhere in the
    chain of exceptions orbax / tensorstore wrap it in."""
    seen = e
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        m = re.search(r"Failed to write[^:]*: ([^\[\n]+?)\s*\[os_error_code", str(seen))
        if m:
            return m.group(1)
        seen = seen.__cause__ or seen.__context__
    return _first_line(e)


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` with the run's conventions.

    Rotation is done here, not by orbax: `rotate` keeps the newest `keep` steps and, always, the
    newest step known good (see `loop.py`), so a keep of 1 never leaves only an unproven state.
    Every failure is a `CheckpointError` naming the step and what to do.

    Args:
      workdir: run directory; checkpoints go to `workdir/checkpoints`.
      keep: number of most recent checkpoints kept.
      async_save: write in a background thread (call `wait()` before exiting).
      read_only: never create directories (eval).
    """

    def __init__(self, workdir: str, keep: int = 3, async_save: bool = True,
                 read_only: bool = False):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        self.aside_directory = os.path.abspath(os.path.join(workdir, ASIDE_DIR))
        self.keep = keep
        opts = ocp.CheckpointManagerOptions(
            max_to_keep=None, enable_async_checkpointing=async_save, create=not read_only,
            read_only=read_only, save_interval_steps=0 if read_only else 1,
        )
        self._mgr = ocp.CheckpointManager(self.directory, options=opts,
                                          item_names=("state", "data", "meta"))
        self._saving: int | None = None

    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._mgr.all_steps())

    def save(self, step: int, state: Any, data_iter: Any, meta: dict) -> None:
        """Saves asynchronously; the data-iterator position is read now (grain's handler writes
        one file per process, so multi-host runs resume every process at its own position)."""
        self.wait()  # a failed previous save is reported as that step's failure
        self._saving = step
        try:
            self._mgr.save(step, args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=grain.checkpoint.CheckpointSave(data_iter),
                meta=ocp.args.JsonSave(meta),
            ), force=True)
        except Exception as e:
            self._failed(e)

    def wait(self) -> None:
        """Blocks until the pending save is on disk; CheckpointError if it failed."""
        try:
            self._mgr.wait_until_finished()
        except Exception as e:
            self._failed(e)
        self._saving = None

    def _failed(self, e: Exception):
        step, self._saving = self._saving, None
        kept = [s for s in self._safe_steps() if s != step]
        raise CheckpointError(
            f"saving checkpoint step {step} to {self.directory} failed: {_write_failure(e)}; "
            + (f"checkpoints {_steps_text(kept)} are intact" if kept else "no other checkpoint")
            + " (free space, then rerun to resume)") from e

    def _safe_steps(self) -> list[int]:
        with contextlib.suppress(Exception):
            self._mgr.reload()
        try:
            return self.all_steps()
        except Exception:
            return []

    def rotate(self, protect: int | None) -> None:
        """Deletes all but the newest `keep` steps and `protect` (the newest known-good one)."""
        steps = self.all_steps()
        keep = set(steps[-self.keep:]) | ({protect} if protect is not None else set())
        for s in steps:
            if s not in keep and s != self._saving:
                self._mgr.delete(s)

    def set_aside(self, steps: list[int]) -> str:
        """Moves checkpoints of `steps` to `<workdir>/checkpoints_aside/` (never deletes them)."""
        self.wait()
        if jax.process_index() == 0:
            os.makedirs(self.aside_directory, exist_ok=True)
            for s in steps:
                dst = os.path.join(self.aside_directory, str(s))
                n = 1
                while os.path.exists(dst):
                    dst, n = os.path.join(self.aside_directory, f"{s}.{n}"), n + 1
                shutil.move(os.path.join(self.directory, str(s)), dst)
        self._mgr.reload()
        return self.aside_directory

    def read_meta(self, step: int) -> dict:
        try:
            out = self._mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except Exception as e:  # orbax raises many types for unreadable files
            raise CheckpointError(self._unreadable(step, f"metadata: {_first_line(e)}")) from e
        return out["meta"]

    def _unreadable(self, step: int, why: str) -> str:
        others = []
        for s in reversed(self.all_steps()):
            if s != step:
                with contextlib.suppress(Exception):
                    self._mgr.restore(s, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
                    others.append(s)
        hint = (f"checkpoints {_steps_text(others)} look intact: pass --restore_step={others[0]} "
                "to use one" if others else "no other checkpoint is readable")
        return (f"checkpoint step {step} in {self.directory} is corrupt or incomplete ({why}); "
                f"{hint}. Nothing was changed.")

    def check_compatible(self, step: int, meta: dict) -> None:
        """Raises CheckpointError naming the first differing model/tokenizer setting."""
        saved = self.read_meta(step)
        problems = model_diff(saved.get("model", {}), meta["model"])
        if saved.get("tokenizer") != meta["tokenizer"]:
            problems.insert(0, f"tokenizer: checkpoint {saved.get('tokenizer')!r} "
                               f"vs config {meta['tokenizer']!r}")
        if problems:
            raise CheckpointError(
                f"checkpoint step {step} in {self.directory} was written for a different "
                f"model/tokenizer ({_first_and_count(problems)}); use another --workdir or "
                "matching settings. Nothing was changed."
            )

    def restore(self, step: int, abstract_state: Any, data_iter: Any = None,
                meta: dict | None = None) -> tuple[Any, dict]:
        """Returns (state, meta) of `step`, placed like `abstract_state`; moves `data_iter` (if
        given) to the saved data position. With the run's `meta`, a failure caused by other
        optimizer settings names them instead of calling the checkpoint corrupt."""
        items = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        try:
            out = self._mgr.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:
            saved = self.read_meta(step)
            optim = config_diff(saved.get("optim", {}), (meta or {}).get("optim", {}),
                                "config.optim")
            mismatch = any(w in str(e).lower() for w in ("structure", "shape"))
            if meta is not None and "optim" in saved and optim and mismatch:
                optim.sort(key=lambda p: not p.startswith("config.optim.name:"))
                raise CheckpointError(
                    f"checkpoint step {step} in {self.directory} holds the state of other "
                    f"optimizer settings ({_first_and_count(optim)}); resume with the "
                    "checkpoint's config.optim or use another --workdir. Nothing was changed."
                ) from e
            raise CheckpointError(self._unreadable(step, _first_line(e))) from e
        return out["state"], out["meta"]

    def close(self) -> None:
        try:
            self.wait()
        finally:
            self._mgr.close()


def _steps_text(steps) -> str:
    return ", ".join(str(s) for s in sorted(steps, reverse=True))


def _first_and_count(problems: list[str]) -> str:
    return problems[0] + (f"; and {len(problems) - 1} more" if len(problems) > 1 else "")
