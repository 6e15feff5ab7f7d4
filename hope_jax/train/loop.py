"""The training loop that `train.py` (and the tests) call: `train(cfg, workdir)`.

`setup` does everything that can fail on bad input before the first step: it claims the workdir
(lock; an existing config must match), opens and checks every data source (train and validation:
each must yield a batch with real targets), builds the model/optimizer, restores a checkpoint or
initializes, and only then writes the run's config. A failed setup leaves the workdir as it was.

`_loop` runs the jitted step with metrics fetched one step late (so the host never stalls the
device), periodic validation and async checkpoints, a clean stop with a checkpoint on SIGTERM or
Ctrl-C (a second Ctrl-C aborts), and a hard stop on a non-finite loss.

Known good. The loss and gradient norm a step reports are computed from the params it starts
from, so state `s` is proven good once step `s + 1` reports a finite loss and gradient norm (or
the final evaluation of `s` is finite). A checkpoint of a state that turns out bad is moved to
`checkpoints_aside/` and the error names the last good step; rotation never removes the newest
good checkpoint.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
import signal
import sys
import threading
import time
from typing import Any

import jax
import numpy as np

from hope_jax import sharding
from hope_jax.config import Config, ConfigError
from hope_jax.data import DataError, build_tokenizer, make_dataset
from hope_jax.eval.perplexity import evaluate
from hope_jax.models.lm import LM
from hope_jax.models.ntp_memory import check_budget
from hope_jax.train.checkpoint import Checkpointer, CheckpointError
from hope_jax.train.metrics import MetricWriter
from hope_jax.train.state import TrainState, init_state, make_optimizer, state_shardings
from hope_jax.train.step import jit_eval_step, jit_train_step
from hope_jax.train.workdir import WorkdirLock, check_config, run_meta, write_config


class TrainingError(RuntimeError):
    """Training cannot continue (non-finite loss, ...); the last good checkpoint is kept."""


class _StopFlag:
    """Turns SIGTERM and the first SIGINT into a flag checked between steps; a second SIGINT
    raises KeyboardInterrupt (abort without waiting). Main thread only."""

    def __init__(self):
        self.signal: int | None = None
        self._old = {}

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGINT):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum, frame):
        if signum == signal.SIGINT and self.signal is not None:
            raise KeyboardInterrupt
        self.signal = signum
        if signum == signal.SIGINT:
            print("Ctrl-C: saving a checkpoint and stopping (Ctrl-C again to abort)",
                  file=sys.stderr, flush=True)

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def check_vocab(cfg: Config, tokenizer) -> None:
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise ConfigError(
            f"tokenizer {tokenizer.name!r} has {tokenizer.vocab_size} tokens but "
            f"config.model.vocab_size={cfg.model.vocab_size}; set config.model.vocab_size >= "
            f"{tokenizer.vocab_size}"
        )


def _first_batch(ds, what: str) -> None:
    """Reads the first batch of `ds`; DataError unless it holds at least one target token."""
    try:
        batch = next(iter(ds))
    except StopIteration:
        batch = None
    if batch is None or not np.any(batch["mask"]):
        raise DataError(f"the {what} data yields no sequence to train or score on")


@dataclasses.dataclass
class Setup:
    """A run ready for its first step (see `setup`)."""

    cfg: Config
    workdir: str
    mesh: Any
    state: TrainState
    train_it: Any
    val_ds: Any
    ckpt: Checkpointer
    meta: dict
    step_fn: Any
    eval_fn: Any
    restored: int | None
    lock: WorkdirLock


def setup(cfg: Config, workdir: str, restore_step: int | None = None) -> Setup:
    """Checks every input and builds the run; raises before anything is written on bad input.

    Args:
      cfg: validated config.
      workdir: run directory (created if missing, removed again if the start fails).
      restore_step: resume from this checkpoint instead of the latest; newer ones are moved to
        `checkpoints_aside/`.
    """
    tokenizer = build_tokenizer(cfg.data)
    check_vocab(cfg, tokenizer)
    lock = WorkdirLock(workdir)
    ckpt = None
    try:
        check_config(cfg, workdir)
        meta = run_meta(cfg, tokenizer)
        mesh = sharding.make_mesh(cfg.mesh)
        sharding.check_batch(cfg.data.batch_size, cfg.optim.grad_accum, mesh)
        check_budget(cfg, dict(mesh.shape))
        pidx, pcount = jax.process_index(), jax.process_count()
        train_ds = make_dataset(cfg.data, "train", tokenizer=tokenizer, process_index=pidx,
                                process_count=pcount)
        val_ds = make_dataset(cfg.data, "val", tokenizer=tokenizer, process_index=pidx,
                              process_count=pcount, repeat=False)
        _first_batch(train_ds, "training")
        _first_batch(val_ds, "validation")
        train_it = iter(train_ds)

        model = LM(cfg.model)
        tx = make_optimizer(cfg, model)
        state_sh = state_shardings(cfg, model, tx, mesh)
        # One trace of the state: restore target and fresh init share this jitted init.
        init = jax.jit(lambda: init_state(cfg, model, tx), out_shardings=state_sh)
        ckpt = Checkpointer(workdir, cfg.train.keep_ckpts, cfg.train.async_ckpt)
        step = _pick_step(ckpt, restore_step)
        if step is not None:
            ckpt.check_compatible(step, meta)  # restored straight into this run's mesh
            state, _ = ckpt.restore(step, init.eval_shape(), train_it, meta)
            newer = [s for s in ckpt.all_steps() if s > step]
            if newer:
                where = ckpt.set_aside(newer)
                print(f"--restore_step={step}: moved newer checkpoints {newer} to {where}",
                      file=sys.stderr, flush=True)
        else:
            state = init()
        step_fn = jit_train_step(model, tx, cfg.optim.grad_accum, mesh, state_sh)
        eval_fn = jit_eval_step(model, mesh)
        write_config(cfg, workdir)
    except BaseException:
        if ckpt is not None:
            with contextlib.suppress(Exception):
                ckpt.close()
        lock.release(started=False)
        raise
    return Setup(cfg, workdir, mesh, state, train_it, val_ds, ckpt, meta, step_fn, eval_fn,
                 step, lock)


def _pick_step(ckpt: Checkpointer, restore_step: int | None) -> int | None:
    if restore_step is None:
        return ckpt.latest_step()
    if restore_step not in ckpt.all_steps():
        have = ", ".join(str(s) for s in reversed(ckpt.all_steps())) or "none"
        raise CheckpointError(f"--restore_step={restore_step}: no such checkpoint in "
                              f"{ckpt.directory} (steps: {have})")
    return restore_step


def train(cfg: Config, workdir: str, *, stop_after: int | None = None,
          restore_step: int | None = None) -> dict[str, Any]:
    """Trains (or resumes) the run in `workdir` up to `cfg.train.steps`.

    Args:
      cfg: validated config.
      workdir: run directory (created if missing).
      stop_after: stop (with a checkpoint) once this many steps are done in total, as a
        preemption would; the schedule still follows `cfg.train.steps`.
      restore_step: resume from this checkpoint instead of the latest (see `setup`).

    Returns:
      Summary dict: step, train_loss, val_loss, val_ppl, tokens_per_s, wall_s, status.
    """
    t_start = time.time()
    run = setup(cfg, workdir, restore_step)
    try:
        summary = _loop(run, stop_after)
    finally:
        try:
            run.ckpt.close()
        finally:
            run.lock.release(started=True)
    summary.update(wall_s=time.time() - t_start, workdir=os.path.abspath(workdir))
    return summary


def _loop(run: Setup, stop_after: int | None) -> dict[str, Any]:
    cfg, ckpt, mesh = run.cfg, run.ckpt, run.mesh
    state = run.state
    start = int(state.step)
    end = cfg.train.steps if stop_after is None else min(stop_after, cfg.train.steps)
    writer = MetricWriter(run.workdir, cfg.train.steps, start, cfg.train.progress,
                          cfg.train.tensorboard)
    summary: dict[str, Any] = {"status": "done", "start_step": start}
    saved = run.restored  # newest checkpoint on disk
    good = None  # newest checkpoint proven good (its params gave a finite loss and gradient)

    def save(step_now: int):
        nonlocal saved
        if saved == step_now:
            return
        ckpt.save(step_now, state, run.train_it, run.meta)
        saved = step_now
        ckpt.rotate(protect=good)

    def proven(step_now: int):
        nonlocal good
        if saved == step_now and good != step_now:
            good = step_now
            ckpt.rotate(protect=good)

    def bad(step_bad: int, what: str):
        """State `step_bad` is not finite: its checkpoint (if any) goes aside; stop."""
        ckpt.wait()
        moved = ""
        if saved == step_bad:
            moved = f"; its checkpoint was moved to {ckpt.set_aside([step_bad])}"
        last = ckpt.latest_step()
        where = (f"last good checkpoint: step {last} in {ckpt.directory}" if last is not None
                 else "no checkpoint has been written")
        raise TrainingError(f"{what}: the state after step {step_bad} is not usable{moved}; "
                            f"stopped, {where}. Lower config.optim.lr or check the data.")

    def run_eval(step_now: int):
        res = evaluate(run.eval_fn, state.params, iter(run.val_ds), cfg.train.eval_batches)
        if not math.isfinite(res["loss"]):
            bad(step_now, f"non-finite validation loss at step {step_now}")
        proven(step_now)
        writer.write(step_now, res, prefix="val")
        writer.message(f"step {step_now}: val loss {res['loss']:.4f} ppl {res['ppl']:.2f}")
        summary.update(val_loss=res["loss"], val_ppl=res["ppl"])

    pending = None  # (step, metrics on device) of the previous step, fetched one step late
    tokens_seen, t0, train_loss = 0, time.time(), float("nan")

    def drain():
        """Fetches the pending step's metrics (one step late, so the host never waits on the
        step it just dispatched), logs them, and stops on a non-finite loss."""
        nonlocal tokens_seen, train_loss, pending
        if pending is None:
            return
        (step_done, m), pending = pending, None
        m = jax.device_get(m)
        loss, gnorm = float(m["loss"]), float(m["grad_norm"])
        if not (math.isfinite(loss) and math.isfinite(gnorm)):
            bad(step_done - 1, f"non-finite loss at step {step_done} (loss={loss}, "
                               f"grad_norm={gnorm})")
        proven(step_done - 1)
        tokens_seen += int(m["tokens"])
        train_loss = loss
        if step_done % cfg.train.log_every == 0 or step_done == end:
            dt = max(time.time() - t0, 1e-9)
            writer.write(step_done, {"loss": loss, "grad_norm": gnorm,
                                     "tokens_per_s": tokens_seen / dt})
            writer.progress(step_done, {"loss": f"{loss:.3f}", "tok/s": f"{tokens_seen / dt:,.0f}"})

    try:
        with _StopFlag() as stop:
            for step in range(start, end):
                batch = sharding.place_batch(next(run.train_it), mesh)
                state, metrics = run.step_fn(state, batch)
                drain()
                pending = (step + 1, metrics)
                done = step + 1
                if stop.signal is not None:
                    drain()
                    save(done)
                    ckpt.wait()
                    summary["status"] = "preempted"
                    writer.message(f"signal {stop.signal}: saved checkpoint at step {done}")
                    break
                if cfg.train.eval_every and done % cfg.train.eval_every == 0 and done < end:
                    drain()
                    run_eval(done)
                if cfg.train.ckpt_every and done % cfg.train.ckpt_every == 0:
                    drain()
                    save(done)
            drain()
            final = int(state.step)
            if summary["status"] == "done":
                save(final)  # on disk before the final evaluation: it cannot lose the run
                ckpt.wait()
                if final == cfg.train.steps or cfg.train.eval_every:
                    run_eval(final)
            ckpt.wait()
    finally:
        writer.close()
    wall = time.time() - t0
    summary.update(step=int(state.step), train_loss=train_loss,
                   tokens_per_s=tokens_seen / max(wall, 1e-9))
    return summary
