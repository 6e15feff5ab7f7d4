"""Recurrent (token-by-token) decoding that carries KV caches and fast-memory state.

A driver around the one LM body (`models/lm.py`): the parallel forward recomputes everything;
decoding calls the same `LM` with its per-layer carry (`registry.init_carry`):
  * attention (Transformer++, Hope-Attention): a KV cache (`nn.attention.init_cache`);
  * HOPE's self-modifying Titans mixer: its fast weights, optimizer state and conv tails.

Chunked fast memories take every inner gradient at the chunk-start weights (SPEC §4.4, A1), so
feeding one token at a time with chunk size 1 would be a *different* model. Decoding is exact
instead: the state is committed only at chunk boundaries (multiples of C, the lcm of the mixer's
chunk sizes, counted from position 0 as in the parallel forward); the tokens of the current
partial chunk sit in a buffer and each step reruns that one chunk (padded to C; padding comes
after the real tokens, and every mixer is causal, so the real tokens' outputs are exact) from
the committed state. Per-token cost is one C-token forward; C = 1 for pure attention.

C comes from the model registry (`ModelSpec.decode_chunk`); models that cannot be replayed this
way report 0 and callers fall back to the exact recompute path (`eval/sample.py`).

Shape legend: B batch, T time, C chunk, D width, V vocabulary, L layers.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np

from hope_jax.config import ModelConfig
from hope_jax.models.lm import LM
from hope_jax.models.registry import init_carry, model_spec


def decode_chunk(cfg: ModelConfig) -> int:
    """Tokens per committed decode step (C), or 0 when the model cannot decode recurrently."""
    return model_spec(cfg).decode_chunk(cfg)


class Decoder:
    """Prefill + per-token steps with carried state; exact w.r.t. the parallel forward.

    Usage:
      dec = Decoder(cfg.model, params, max_len=1024)
      st = dec.init(batch=1)
      logits_BTV, st = dec.prefill(st, prompt_BT)
      logits_BV, st = dec.step(st, next_token_B)
    """

    def __init__(self, cfg: ModelConfig, params, max_len: int):
        self.chunk = decode_chunk(cfg)
        if not self.chunk:
            raise ValueError(f"model {cfg.name!r} with this config cannot decode recurrently")
        self.cfg, self.params = cfg, params
        self.max_len = max_len + self.chunk  # room for the padded partial chunk
        model = LM(cfg)

        @jax.jit
        def run(params, states, tokens_BT, start):
            b, t = tokens_BT.shape
            pos = jnp.broadcast_to(start + jnp.arange(t, dtype=jnp.int32), (b, t))
            seg = jnp.ones((b, t), jnp.int32)
            logits, new = model.apply({"params": params}, tokens_BT, pos, seg, states)
            return logits.astype(jnp.float32), new

        self._run = run

    def init(self, batch: int = 1) -> dict:
        """A fresh decode state: nothing committed, an empty partial-chunk buffer."""
        return {"states": init_carry(self.cfg, batch, self.max_len), "len": 0,
                "buf": np.zeros((batch, self.chunk), np.int32), "n": 0}

    def _commit(self, st, tokens_BT):
        logits, states = self._run(self.params, st["states"], jnp.asarray(tokens_BT),
                                   jnp.int32(st["len"]))
        return logits, {**st, "states": states, "len": st["len"] + tokens_BT.shape[1]}

    def prefill(self, st: dict, tokens_BT) -> tuple[jax.Array, dict]:
        """Feeds a prompt [B, T]; returns its logits [B, T, V] (fp32) and the new state."""
        tokens_BT = np.asarray(tokens_BT, np.int32)
        outs, t0 = [], 0
        if st["n"] == 0:
            full = (tokens_BT.shape[1] // self.chunk) * self.chunk
            while t0 < full:  # power-of-two multiples of C: few distinct compiled shapes
                size = self.chunk * 2 ** int(math.log2((full - t0) // self.chunk))
                logits, st = self._commit(st, tokens_BT[:, t0:t0 + size])
                outs.append(logits)
                t0 += size
        for i in range(t0, tokens_BT.shape[1]):
            logits, st = self.step(st, tokens_BT[:, i])
            outs.append(logits[:, None])
        return jnp.concatenate(outs, axis=1), st

    def step(self, st: dict, token_B) -> tuple[jax.Array, dict]:
        """Feeds one token per row; returns next-token logits [B, V] (fp32) and the new state."""
        buf = st["buf"].copy()
        n = st["n"]
        buf[:, n] = np.asarray(token_B, np.int32)
        logits, states = self._run(self.params, st["states"], jnp.asarray(buf),
                                   jnp.int32(st["len"]))
        if n + 1 == self.chunk:  # chunk complete: its end state is exact, commit it
            return logits[:, n], {"states": states, "len": st["len"] + self.chunk,
                                  "buf": np.zeros_like(buf), "n": 0}
        return logits[:, n], {**st, "buf": buf, "n": n + 1}
