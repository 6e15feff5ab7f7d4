"""Validation loss, perplexity and bits per byte over a finite iterator of batches."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import jax
import numpy as np


def evaluate(eval_fn: Callable, params, batches: Iterator[dict], max_batches: int = 0,
             bytes_per_token: np.ndarray | None = None) -> dict[str, float]:
    """Averages token NLL over up to `max_batches` batches (0 = all).

    Args:
      eval_fn: jitted `(params, batch) -> (nll_sum, count)` (see `make_eval_step`).
      params: model params.
      batches: iterator of numpy batches (inputs, targets, positions, segment_ids, mask).
      max_batches: cap on batches (0 = exhaust the iterator).
      bytes_per_token: optional [V] table of UTF-8 bytes each token id decodes to; when given,
        bits per byte = total NLL / (ln 2 * total target bytes).

    Returns:
      {"loss", "ppl", "tokens", "bpb" (if bytes_per_token)}.
    """
    nll, count, nbytes = 0.0, 0.0, 0.0
    for i, batch in enumerate(batches):
        if max_batches and i >= max_batches:
            break
        s, c = jax.device_get(eval_fn(params, {k: jax.numpy.asarray(v) for k, v in batch.items()}))
        nll, count = nll + float(s), count + float(c)
        if bytes_per_token is not None:
            nbytes += float(np.sum(bytes_per_token[batch["targets"]] * batch["mask"]))
    if count == 0:
        raise ValueError("evaluation saw no target tokens (empty validation data)")
    loss = nll / count
    out = {"loss": loss, "ppl": math.exp(min(loss, 80.0)), "tokens": count}
    if bytes_per_token is not None and nbytes > 0:
        out["bpb"] = nll / (math.log(2) * nbytes)
    return out
