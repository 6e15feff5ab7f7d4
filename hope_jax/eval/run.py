"""Evaluation of a trained run directory: restore the latest checkpoint, then score or sample."""

from __future__ import annotations

import dataclasses

import jax
import numpy as np

from hope_jax.config import Config
from hope_jax.data import build_tokenizer, make_dataset
from hope_jax.eval.perplexity import evaluate
from hope_jax.models.lm import LM
from hope_jax.train.checkpoint import Checkpointer, CheckpointError
from hope_jax.train.state import init_state, make_optimizer
from hope_jax.train.step import make_eval_step
from hope_jax.train.workdir import run_meta


@dataclasses.dataclass
class Run:
    cfg: Config
    model: LM
    params: object
    tokenizer: object
    step: int


def load_run(cfg: Config, workdir: str, step: int | None = None) -> Run:
    """Restores checkpoint `step` (default: the latest) of `workdir`, validated against `cfg`."""
    tokenizer = build_tokenizer(cfg.data)
    ckpt = Checkpointer(workdir, read_only=True)
    step = ckpt.latest_step() if step is None else step
    if step is None:
        raise CheckpointError(f"no checkpoint in {ckpt.directory}; train first")
    if step not in ckpt.all_steps():
        raise CheckpointError(f"--restore_step={step}: no such checkpoint in {ckpt.directory} "
                              f"(steps: {', '.join(map(str, ckpt.all_steps())) or 'none'})")
    ckpt.check_compatible(step, run_meta(cfg, tokenizer))
    model = LM(cfg.model)
    tx = make_optimizer(cfg, model)
    abstract = jax.eval_shape(lambda: init_state(cfg, model, tx))
    state, _ = ckpt.restore(step, abstract)
    ckpt.close()
    return Run(cfg, model, state.params, tokenizer, step)


def bytes_per_token(tokenizer) -> np.ndarray:
    """UTF-8 length of each token id's text (0 for special tokens such as EOS)."""
    table = np.zeros((tokenizer.vocab_size,), np.float64)
    for i in range(tokenizer.vocab_size):
        if i != tokenizer.eos_id:
            table[i] = len(tokenizer.decode([i]).encode("utf-8"))
    return table


def score(run: Run, data_paths: tuple[str, ...] = (), max_batches: int = 0) -> dict:
    """Loss, perplexity and bits per byte on the run's validation split or on `data_paths`."""
    data_cfg = run.cfg.data
    if data_paths:
        data_cfg = dataclasses.replace(data_cfg, source="files", train_paths=tuple(data_paths),
                                       val_paths=tuple(data_paths))
    batches = iter(make_dataset(data_cfg, "val", tokenizer=run.tokenizer, repeat=False))
    eval_fn = jax.jit(make_eval_step(run.model))
    res = evaluate(eval_fn, run.params, batches, max_batches, bytes_per_token(run.tokenizer))
    return {"step": run.step, "data": list(data_paths) or "validation split", **res}
