"""Run logging: metrics to JSONL and TensorBoard, a progress bar, and text messages.

Only process 0 writes (multi-host runs). Everything a run prints goes through this writer, to
stderr (the bar and messages alike; stdout is left to the caller's JSON result).

On resume, rows of steps after the restored one (logged before a kill, then trained again) are
dropped from `metrics.jsonl`, so every step appears once.
"""

from __future__ import annotations

import json
import os
import sys
import time

import jax


class MetricWriter:
    """Writes `metrics.jsonl` (+ TensorBoard events) in the workdir and drives a tqdm bar.

    Args:
      workdir: run directory.
      total_steps: length of the run (progress bar).
      start_step: first step of this process (resume).
      progress: show a progress bar.
      tensorboard: also write TensorBoard event files under `workdir/tb`.
    """

    def __init__(self, workdir: str, total_steps: int, start_step: int = 0,
                 progress: bool = True, tensorboard: bool = True):
        self.active = jax.process_index() == 0
        self._jsonl = self._tb = self._bar = None
        if not self.active:
            return
        path = os.path.join(workdir, "metrics.jsonl")
        _drop_rows_after(path, start_step)
        self._jsonl = open(path, "a", buffering=1)  # noqa: SIM115
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tb"))
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, dynamic_ncols=True,
                             unit="step", mininterval=1.0, file=sys.stderr)

    def write(self, step: int, metrics: dict[str, float], prefix: str = "train") -> None:
        if not self.active:
            return
        row = {"step": step, "time": time.time(),
               **{f"{prefix}/{k}": v for k, v in metrics.items()}}
        self._jsonl.write(json.dumps(row) + "\n")
        if self._tb is not None:
            for k, v in metrics.items():
                self._tb.add_scalar(f"{prefix}/{k}", v, step)

    def progress(self, step: int, postfix: dict[str, str]) -> None:
        if self._bar is not None:
            self._bar.n = step
            self._bar.set_postfix(postfix, refresh=False)
            self._bar.refresh()

    def message(self, text: str) -> None:
        if not self.active:
            return
        if self._bar is not None:
            self._bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._jsonl is not None:
            self._jsonl.close()


def _drop_rows_after(path: str, step: int) -> None:
    """Rewrites `path` (atomically) without the rows of steps > `step` (or torn rows), if any."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = f.readlines()
    keep = [ln for ln in lines if ln.endswith("\n") and _step_of(ln) <= step]
    if len(keep) == len(lines):
        return
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.writelines(keep)
    os.replace(tmp, path)


def _step_of(line: str) -> float:
    try:
        return json.loads(line).get("step", 0)
    except ValueError:  # a line torn by a kill
        return float("inf")
