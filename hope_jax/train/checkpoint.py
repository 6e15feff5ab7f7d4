"""Orbax checkpointing of the whole run: train state, data-iterator state and run metadata.

Layout: `<workdir>/checkpoints/<step>/{state,data,meta}`. `meta` holds the resolved model config
and the tokenizer identity, so a checkpoint is never silently restored into a different model or
tokenizer. Saves are asynchronous and keep the last `keep` steps; nothing here ever deletes a
checkpoint except orbax's keep-last-N rotation of checkpoints this run wrote itself.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from hope_jax.config import ModelConfig


class CheckpointError(RuntimeError):
    """A checkpoint is missing, unreadable, or does not fit the current config."""


def model_defaults() -> dict:
    """The model section of a default config, as it appears in config.json / checkpoint meta."""
    return json.loads(json.dumps(dataclasses.asdict(ModelConfig())))


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


class Checkpointer:
    """Thin wrapper over `ocp.CheckpointManager` with the run's conventions.

    Args:
      workdir: run directory; checkpoints go to `workdir/checkpoints`.
      keep: number of most recent checkpoints kept.
      async_save: write in a background thread (call `wait()` before exiting).
      read_only: never create directories (eval).
    """

    def __init__(self, workdir: str, keep: int = 3, async_save: bool = True,
                 read_only: bool = False):
        self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
        opts = ocp.CheckpointManagerOptions(
            max_to_keep=keep, enable_async_checkpointing=async_save, create=not read_only,
            read_only=read_only,
        )
        self._mgr = ocp.CheckpointManager(self.directory, options=opts,
                                          item_names=("state", "data", "meta"))

    def latest_step(self) -> int | None:
        return self._mgr.latest_step()

    def all_steps(self) -> list[int]:
        return list(self._mgr.all_steps())

    def save(self, step: int, state: Any, data_iter: Any, meta: dict) -> None:
        """Saves asynchronously; the data-iterator position is read now (grain's handler writes
        one file per process, so multi-host runs resume every process at its own position)."""
        self._mgr.save(step, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            data=grain.checkpoint.CheckpointSave(data_iter),
            meta=ocp.args.JsonSave(meta),
        ), force=True)

    def read_meta(self, step: int) -> dict:
        try:
            out = self._mgr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        except Exception as e:  # orbax raises many types for unreadable files
            raise CheckpointError(
                f"checkpoint step {step} in {self.directory} is corrupt or unreadable "
                f"(metadata: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}); "
                "nothing was changed"
            ) from e
        return out["meta"]

    def check_compatible(self, step: int, meta: dict) -> None:
        """Raises CheckpointError naming the first differing model/tokenizer setting."""
        saved = self.read_meta(step)
        problems = config_diff(saved.get("model", {}), meta["model"], "config.model",
                               defaults=model_defaults())
        if saved.get("tokenizer") != meta["tokenizer"]:
            problems.insert(0, f"tokenizer: checkpoint {saved.get('tokenizer')!r} "
                               f"vs config {meta['tokenizer']!r}")
        if problems:
            raise CheckpointError(
                f"checkpoint step {step} in {self.directory} was written for a different "
                f"model/tokenizer ({problems[0]}"
                + (f"; and {len(problems) - 1} more" if len(problems) > 1 else "")
                + "); use another --workdir or matching settings. Nothing was changed."
            )

    def restore(self, step: int, abstract_state: Any, data_iter: Any = None) -> tuple[Any, dict]:
        """Returns (state, meta) of `step`, placed like `abstract_state`; moves `data_iter` (if
        given) to the saved data position."""
        items = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
        if data_iter is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iter)
        try:
            out = self._mgr.restore(step, args=ocp.args.Composite(**items))
        except Exception as e:
            first = str(e).splitlines()[0] if str(e) else ""
            raise CheckpointError(
                f"checkpoint step {step} in {self.directory} is corrupt or does not match the "
                f"model ({type(e).__name__}: {first[:300]}); nothing was changed"
            ) from e
        return out["state"], out["meta"]

    def wait(self) -> None:
        self._mgr.wait_until_finished()

    def close(self) -> None:
        self._mgr.wait_until_finished()
        self._mgr.close()


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) of a concrete pytree, for restore targets."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
