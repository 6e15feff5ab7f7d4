"""Run logging: metrics to JSONL and TensorBoard, a progress bar, and text messages.

Only process 0 writes (multi-host runs); the library never prints directly, everything goes
through this writer (or the `logging` module).
"""

from __future__ import annotations

import json
import logging
import os
import time

import jax

log = logging.getLogger("hope_jax")


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
        self._jsonl = open(os.path.join(workdir, "metrics.jsonl"), "a", buffering=1)  # noqa: SIM115
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tb"))
        if progress:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=total_steps, initial=start_step, dynamic_ncols=True,
                             unit="step", mininterval=1.0)

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
            self._bar.write(text)
        else:
            log.info(text)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
        if self._tb is not None:
            self._tb.close()
        if self._jsonl is not None:
            self._jsonl.close()
