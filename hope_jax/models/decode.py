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

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from hope_jax.models.config import ModelConfig
from hope_jax.models.lm import LM
from hope_jax.models.ntp import ntp_init, ntp_inputs, ntp_logits, ntp_segment, ntp_step
from hope_jax.models.registry import init_carry, model_spec


def decode_chunk(cfg: ModelConfig) -> int:
    """Tokens per committed decode step (C), or 0 when the model cannot decode recurrently."""
    return model_spec(cfg).decode_chunk(cfg)


class _NtpDriver(nn.Module):
    """The `ntp` segment driver around the LM body (params {"ntp": ...}, as `LM`'s): commits one
    labelled segment (CMS update) or returns a partial segment's logits without committing."""

    cfg: ModelConfig
    context: int
    commit: bool

    @nn.compact
    def __call__(self, carry, xs):
        body = LM(self.cfg, name="ntp")
        if self.commit:
            return ntp_step(body, self.cfg, self.context, carry, xs)
        return carry, ntp_logits(body, self.cfg, carry, xs)


def _positions(tokens_BT, start):
    b, t = tokens_BT.shape
    return (jnp.broadcast_to(start + jnp.arange(t, dtype=jnp.int32), (b, t)),
            jnp.ones((b, t), jnp.int32))


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
        # in-context CMS (ntp): the LM runs in segments of S tokens of a max_len-token sequence
        self.segment = ntp_segment(cfg, max_len) if model_spec(cfg).supports_ntp else 0
        if self.segment:
            self.chunk = self.segment
            if params is not None and "ntp" not in params:
                raise ValueError(
                    "in-context CMS (ntp) decoding needs the params of the segment body ('ntp'); "
                    "these were initialised on a sequence no longer than the fastest CMS period")
        self.context = max_len
        self.max_len = max_len + self.chunk  # room for the padded partial chunk
        model = LM(cfg)

        @jax.jit
        def run(params, states, tokens_BT, start):
            pos, seg = _positions(tokens_BT, start)
            logits, new = model.apply({"params": params}, tokens_BT, pos, seg, states)
            return logits.astype(jnp.float32), new

        def segment_fn(commit: bool):
            driver = _NtpDriver(cfg, self.context, commit)

            @jax.jit
            def fn(params, carry, tokens_BT, start):
                xs = ntp_inputs(cfg, tokens_BT, *_positions(tokens_BT, start))
                xs = jax.tree_util.tree_map(lambda a: a[:, : self.chunk], xs)
                carry, logits = driver.apply({"params": params}, carry, xs)
                return logits.astype(jnp.float32), carry

            return fn

        self._run = run
        self._commit_segment, self._peek_segment = segment_fn(True), segment_fn(False)

    def init(self, batch: int = 1) -> dict:
        """A fresh decode state: nothing committed, an empty partial-chunk buffer."""
        if self.segment:  # the buffer holds a segment and the first token after it (its label)
            return {"states": ntp_init(self.cfg, batch, self.context, self.max_len), "len": 0,
                    "buf": np.zeros((batch, self.chunk + 1), np.int32), "n": 0}
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
        if self.segment and st["n"] == 0:  # commit every segment whose last label is known
            s = self.chunk
            while t0 + s < tokens_BT.shape[1]:
                logits, carry = self._commit_segment(self.params, st["states"],
                                                     jnp.asarray(tokens_BT[:, t0:t0 + s + 1]),
                                                     jnp.int32(st["len"]))
                st = {**st, "states": carry, "len": st["len"] + s}
                outs.append(logits)
                t0 += s
        elif st["n"] == 0:
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
        if self.segment:
            return self._segment_step(st, token_B)
        buf = st["buf"].copy()
        n = st["n"]
        buf[:, n] = np.asarray(token_B, np.int32)
        logits, states = self._run(self.params, st["states"], jnp.asarray(buf),
                                   jnp.int32(st["len"]))
        if n + 1 == self.chunk:  # chunk complete: its end state is exact, commit it
            return logits[:, n], {"states": states, "len": st["len"] + self.chunk,
                                  "buf": np.zeros_like(buf), "n": 0}
        return logits[:, n], {**st, "buf": buf, "n": n + 1}

    def _segment_step(self, st: dict, token_B) -> tuple[jax.Array, dict]:
        """`ntp`: a segment is committed (its CMS update applied, Eq. 71) once the token after it,
        its last label, arrives; until then its tokens' logits come from the committed state."""
        s, buf, n = self.chunk, st["buf"].copy(), st["n"]
        buf[:, n] = np.asarray(token_B, np.int32)
        n += 1
        if n == s + 1:
            _, carry = self._commit_segment(self.params, st["states"], jnp.asarray(buf),
                                            jnp.int32(st["len"]))
            st = {"states": carry, "len": st["len"] + s}
            buf = np.zeros_like(buf)
            buf[:, 0] = np.asarray(token_B, np.int32)
            n = 1
        logits, _ = self._peek_segment(self.params, st["states"], jnp.asarray(buf[:, :s]),
                                       jnp.int32(st["len"]))
        return logits[:, n - 1], {**st, "buf": buf, "n": n}
