"""Recurrent (token-by-token) decoding that carries KV caches and fast-memory state.

The parallel forward (`LM`) recomputes everything; decoding instead keeps per-layer state:
  * attention (Transformer++, Hope-Attention): a KV cache (`nn.attention.init_cache`);
  * HOPE's self-modifying Titans mixer: its fast weights, optimizer state and conv tails.

Chunked fast memories take every inner gradient at the chunk-start weights (SPEC §4.4, A1), so
feeding one token at a time with chunk size 1 would be a *different* model. Decoding is exact
instead: the state is committed only at chunk boundaries (multiples of C, the lcm of the mixer's
chunk sizes, counted from position 0 as in the parallel forward); the tokens of the current
partial chunk sit in a buffer and each step reruns that one chunk (padded to C; padding comes
after the real tokens, and every mixer is causal, so the real tokens' outputs are exact) from
the committed state. Per-token cost is one C-token forward; C = 1 for pure attention.

Models whose parallel forward cannot be replayed this way (Titans blocks: their NeuralMemory
has no state carry yet; HOPE with `ntp`/`local` in-context CMS updates) report
`decode_chunk(cfg) == 0` and callers fall back to the exact recompute path (`eval/sample.py`).

Shape legend: B batch, T time, C chunk, D width, V vocabulary, L layers.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hope_jax.config import ModelConfig
from hope_jax.models.lm import MODELS
from hope_jax.models.transformer import norm
from hope_jax.nn.attention import init_cache
from hope_jax.nn.layers import DenseGeneral, Embed, dtype_of


def decode_chunk(cfg: ModelConfig) -> int:
    """Tokens per committed decode step (C), or 0 when the model cannot decode recurrently."""
    if cfg.name == "transformer":
        return 1
    if cfg.name not in ("hope", "hope_attention"):
        return 0
    hc = cfg.hope
    if hc.cms_signal != "outer" and any(hc.cms_periods):  # in-context CMS learning: no replay
        return 0
    if cfg.name == "hope_attention":
        return 1
    return math.lcm(hc.chunk_size, hc.other_chunk_size or hc.chunk_size)


def _call_block(blk, cfg: ModelConfig, x, pos, seg, state, max_len: int):
    if cfg.name == "transformer":
        if state is None:
            state = init_cache(x.shape[0], max_len, cfg.kv_heads, cfg.head_dim,
                               jnp.promote_types(dtype_of(cfg.dtype), jnp.float32))
        return blk(x, pos, seg, cache=state)
    n = len(cfg.hope.cms_periods)
    carry = {"mixer": state, "deltas": (None,) * n, "keeps": (None,) * n, "zs": (None,) * n,
             "max_len": max_len}
    return blk(x, pos, seg, carry)


def _make_block(cfg: ModelConfig, max_len: int, name: str) -> nn.Module:
    # HOPE blocks size Hope-Attention's KV cache from max_len: without it every committed chunk
    # attended only to itself (the decode drifted from the parallel forward after one chunk).
    if cfg.name == "transformer":
        return MODELS[cfg.name](cfg, name=name)
    return MODELS[cfg.name](cfg, max_len=max_len, name=name)


class _Cell(nn.Module):
    cfg: ModelConfig
    max_len: int

    @nn.compact
    def __call__(self, x, pos, seg, state):
        blk = _make_block(self.cfg, self.max_len, "block")
        return _call_block(blk, self.cfg, x, pos, seg, state, self.max_len)


class DecodeLM(nn.Module):
    """The `LM` (same parameter tree) run on a slice of tokens with carried per-layer state."""

    cfg: ModelConfig
    max_len: int

    @nn.compact
    def __call__(self, tokens_BT, positions_BT, segment_ids_BT, states):
        """Returns (logits [B, T, V], new per-layer states stacked on a leading [L] axis)."""
        cfg = self.cfg
        dt, pdt = dtype_of(cfg.dtype), dtype_of(cfg.param_dtype)
        embed = Embed(cfg.vocab_size, cfg.d_model, cfg.init_std, dt, pdt, name="embed")
        x = embed(tokens_BT)
        if cfg.scan_layers:
            stack = nn.scan(_Cell, variable_axes={"params": 0}, split_rngs={"params": True},
                            in_axes=(nn.broadcast, nn.broadcast, 0), length=cfg.num_layers,
                            metadata_params={nn.PARTITION_NAME: "layers"})
            x, states = stack(cfg, self.max_len, name="blocks")(x, positions_BT, segment_ids_BT,
                                                                states)
        else:
            new = []
            for i in range(cfg.num_layers):
                st = None if states is None else jax.tree_util.tree_map(lambda a, i=i: a[i], states)
                blk = _make_block(cfg, self.max_len, f"block_{i}")
                x, st = _call_block(blk, cfg, x, positions_BT, segment_ids_BT, st, self.max_len)
                new.append(st)
            states = jax.tree_util.tree_map(lambda *a: jnp.stack(a), *new)
        x = norm(cfg, "final_norm")(x)
        if cfg.tie_embeddings:
            return embed.attend(x), states
        head = DenseGeneral((cfg.vocab_size,), ("embed",), ("vocab",), cfg.init_std, dt, pdt,
                            name="head")
        return head(x), states


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
        model = DecodeLM(cfg, self.max_len)

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
        return {"states": None, "len": 0, "buf": np.zeros((batch, self.chunk), np.int32), "n": 0}

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
