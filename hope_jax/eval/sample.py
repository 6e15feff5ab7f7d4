"""Text sampling from a trained LM: greedy, temperature and top-k.

Models that decode recurrently (`models/decode.py`: the LM body with a carry — KV caches, fast
state, CMS fast parts; every built-in model except HOPE with the `local` CMS signal) are sampled
token by token; the others recompute the causal forward over a fixed-size buffer each token (one
compiled function for the whole generation), which is exact for every model because all models are
causal.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hope_jax.models.decode import Decoder, decode_chunk
from hope_jax.models.ntp import ntp_segment


def _pick(logits_V, key, temperature: float, top_k: int):
    logits_V = logits_V.astype(jnp.float32)
    if temperature <= 0.0:
        return jnp.argmax(logits_V)
    logits_V = logits_V / temperature
    if top_k:
        kth = jax.lax.top_k(logits_V, top_k)[0][-1]
        logits_V = jnp.where(logits_V < kth, -jnp.inf, logits_V)
    return jax.random.categorical(key, logits_V)


def buffer_len(cfg, n: int) -> int:
    """Length >= n of the recompute buffer: a multiple of the segment of models that run segment
    by segment (HOPE with in-context `ntp` CMS levels). The zeros after the last generated token
    never reach earlier logits (every model is causal)."""
    length = n
    while (s := ntp_segment(cfg, length)) and length % s:
        length = -(-length // s) * s
    return length


def generate(model, params, prompt_ids: list[int], max_new_tokens: int, *,
             temperature: float = 0.0, top_k: int = 0, seed: int = 0,
             stop_id: int | None = None, recurrent: bool = True) -> list[int]:
    """Returns the generated continuation (without the prompt).

    Args:
      model: the LM module; params: its params.
      prompt_ids: at least one token id.
      max_new_tokens: tokens to generate.
      temperature: 0 = greedy.
      top_k: keep only the k most likely tokens (0 = all).
      seed: sampling RNG seed.
      stop_id: stop early when this id is produced (e.g. the tokenizer's EOS).
      recurrent: decode with carried state when the model supports it (else recompute).
    """
    if not prompt_ids:
        raise ValueError("the prompt must contain at least one token")
    if recurrent and decode_chunk(model.cfg):
        return _generate_recurrent(model, params, prompt_ids, max_new_tokens, temperature, top_k,
                                   seed, stop_id)
    n = len(prompt_ids) + max_new_tokens
    buf = jnp.zeros((1, buffer_len(model.cfg, n)), jnp.int32)
    buf = buf.at[0, : len(prompt_ids)].set(jnp.asarray(prompt_ids))

    @jax.jit
    def step(buf, pos, key):
        logits = model.apply({"params": params}, buf)[0, pos - 1]
        tok = _pick(logits, key, temperature, top_k)
        return buf.at[0, pos].set(tok.astype(jnp.int32)), tok

    key = jax.random.key(seed)
    out = []
    for pos in range(len(prompt_ids), n):
        buf, tok = step(buf, pos, jax.random.fold_in(key, pos))
        tok = int(tok)
        out.append(tok)
        if stop_id is not None and tok == stop_id:
            break
    return out


def _generate_recurrent(model, params, prompt_ids, max_new_tokens, temperature, top_k, seed,
                        stop_id):
    n = len(prompt_ids) + max_new_tokens
    dec = Decoder(model.cfg, params, max_len=n)
    logits, st = dec.prefill(dec.init(1), [prompt_ids])
    logits = logits[0, -1]
    pick = jax.jit(lambda lg, key: _pick(lg, key, temperature, top_k))
    key = jax.random.key(seed)
    out = []
    for pos in range(len(prompt_ids), n):
        tok = int(pick(logits, jax.random.fold_in(key, pos)))
        out.append(tok)
        if (stop_id is not None and tok == stop_id) or pos == n - 1:
            break
        lg, st = dec.step(st, [tok])
        logits = lg[0]
    return out
