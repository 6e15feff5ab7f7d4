"""The training loop that `train.py` (and the tests) call: `train(cfg, workdir)`.

Responsibilities, in order: prepare the workdir (write or check the resolved config), build the
tokenizer/model/optimizer, restore the latest checkpoint if there is one, then run the jitted
step with metrics fetched one step late (so the host never stalls the device), periodic
validation, periodic async checkpoints, a clean stop on SIGTERM and a hard stop on a non-finite
loss that keeps the last good checkpoint untouched.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from typing import Any

import jax

from hope_jax import sharding
from hope_jax.config import Config, ConfigError
from hope_jax.data import build_tokenizer, make_dataset
from hope_jax.eval.perplexity import evaluate
from hope_jax.models.lm import LM
from hope_jax.train.checkpoint import Checkpointer
from hope_jax.train.metrics import MetricWriter
from hope_jax.train.state import abstract_state, init_state, make_optimizer, state_shardings
from hope_jax.train.step import jit_eval_step, jit_train_step
from hope_jax.train.workdir import prepare_workdir, run_meta


class TrainingError(RuntimeError):
    """Training cannot continue (non-finite loss, ...); the last good checkpoint is kept."""


class _StopFlag:
    """Turns SIGTERM into a flag checked between steps (main thread only)."""

    def __init__(self):
        self.signal: int | None = None
        self._old = {}

    def __enter__(self):
        if _is_main_thread():
            self._old[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._handle)
        return self

    def _handle(self, signum, frame):
        self.signal = signum

    def __exit__(self, *exc):
        for sig, old in self._old.items():
            signal.signal(sig, old)


def _is_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def check_vocab(cfg: Config, tokenizer) -> None:
    if tokenizer.vocab_size > cfg.model.vocab_size:
        raise ConfigError(
            f"tokenizer {tokenizer.name!r} has {tokenizer.vocab_size} tokens but "
            f"config.model.vocab_size={cfg.model.vocab_size}; set config.model.vocab_size >= "
            f"{tokenizer.vocab_size}"
        )


def train(cfg: Config, workdir: str, *, stop_after: int | None = None) -> dict[str, Any]:
    """Trains (or resumes) the run in `workdir` up to `cfg.train.steps`.

    Args:
      cfg: validated config.
      workdir: run directory (created if missing).
      stop_after: stop (with a checkpoint) once this many steps are done in total, as a
        preemption would; the schedule still follows `cfg.train.steps`.

    Returns:
      Summary dict: step, train_loss, val_loss, val_ppl, tokens_per_s, wall_s, status.
    """
    t_start = time.time()
    tokenizer = build_tokenizer(cfg.data)
    check_vocab(cfg, tokenizer)
    prepare_workdir(cfg, workdir, tokenizer)
    meta = run_meta(cfg, tokenizer)

    model = LM(cfg.model)
    tx = make_optimizer(cfg, model)
    ckpt = Checkpointer(workdir, cfg.train.keep_ckpts, cfg.train.async_ckpt)
    mesh = sharding.make_mesh(cfg.mesh)
    sharding.check_batch(cfg.data.batch_size, cfg.optim.grad_accum, mesh)
    state_sh = state_shardings(cfg, model, tx, mesh)
    pidx, pcount = jax.process_index(), jax.process_count()
    train_it = iter(make_dataset(cfg.data, "train", tokenizer=tokenizer, process_index=pidx,
                                 process_count=pcount))
    latest = ckpt.latest_step()
    if latest is not None:
        ckpt.check_compatible(latest, meta)  # restored straight into this run's mesh
        state, _ = ckpt.restore(latest, abstract_state(cfg, model, tx, state_sh), train_it)
    else:
        state = init_state(cfg, model, tx, mesh)

    def val_iter():
        return iter(make_dataset(cfg.data, "val", tokenizer=tokenizer, process_index=pidx,
                                 process_count=pcount, repeat=False))

    step_fn = jit_train_step(model, tx, cfg.optim.grad_accum, mesh, state_sh)
    eval_fn = jit_eval_step(model, mesh)
    start = int(state.step)
    end = cfg.train.steps if stop_after is None else min(stop_after, cfg.train.steps)
    writer = MetricWriter(workdir, cfg.train.steps, start, cfg.train.progress,
                          cfg.train.tensorboard)
    summary: dict[str, Any] = {"status": "done", "start_step": start}
    last_saved = latest

    def save(step_now: int):
        nonlocal last_saved
        if last_saved == step_now:
            return
        ckpt.save(step_now, state, train_it, meta)
        last_saved = step_now

    def run_eval(step_now: int):
        res = evaluate(eval_fn, state.params, val_iter(), cfg.train.eval_batches)
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
            ckpt.wait()
            raise TrainingError(
                f"non-finite loss at step {step_done} (loss={loss}, grad_norm={gnorm}); stopped "
                f"without saving. Last good checkpoint: step {last_saved} in {ckpt.directory}"
            )
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
                batch = sharding.place_batch(next(train_it), mesh)
                state, metrics = step_fn(state, batch)
                drain()
                pending = (step + 1, metrics)
                done = step + 1
                if stop.signal is not None:
                    drain()
                    save(done)
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
                if final == cfg.train.steps or cfg.train.eval_every:
                    run_eval(final)
                save(final)
    finally:
        with contextlib.suppress(Exception):
            ckpt.close()
        writer.close()
    wall = time.time() - t0
    summary.update(step=int(state.step), train_loss=train_loss, wall_s=time.time() - t_start,
                   tokens_per_s=tokens_seen / max(wall, 1e-9), workdir=os.path.abspath(workdir))
    return summary
