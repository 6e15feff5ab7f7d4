"""An independent reference for the `ntp` CMS updates (SPEC Eq. 71, §7.0): the HOPE LM written out
block by block and window by window with plain Python loops, the fast parts Delta as explicit
arrays, and each level's update the plain `jax.grad` of its window's next-token loss w.r.t. its
window's Delta through the WHOLE sequence (`truncate=False`: the exact Eq. 71 gradient, including
the paths through the carried mixer state), or with the carried state a constant between segments
(`truncate=True`: what `models/ntp.py` computes).

Only the sequence mixer is taken from the library (`SelfModifyingTitans` with its state); the
embedding, norms, CMS chain (Eq. 70, W0 + Delta), segmenting, losses, gradients and updates are
written here. One document per row, no packing.

Shape legend: B batch, T time, S segment, N segments, D width, L layers.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from hope_jax.models.hope import self_modifying_layer
from hope_jax.models.transformer import out_std

KEYS = ("gate", "up", "down")


def _rms(x, scale, eps):
    return x * jax.lax.rsqrt(jnp.mean(x * x, -1, keepdims=True) + eps) * scale[None, None, :]


def _mlp(w, n):  # SwiGLU with per-sequence weights [B, D, F] / [B, F, D]
    g = jnp.einsum("btd,bdf->btf", n, w["gate"])
    u = jnp.einsum("btd,bdf->btf", n, w["up"])
    return jnp.einsum("btf,bfd->btd", jax.nn.silu(g) * u, w["down"])


def _block_fn(mcfg):
    """One HOPE block on one segment, jitted once per config: (h, new mixer state)."""
    mixer = self_modifying_layer(mcfg, out_std=out_std(mcfg))
    eps = mcfg.norm_eps

    @jax.jit
    def block(pb, x, pos, state, ws):
        seg = jnp.ones(pos.shape, jnp.int32)
        y, state = mixer.apply({"params": pb["mixer"]}, _rms(x, pb["mixer_norm"]["scale"], eps),
                               pos, seg, state)
        h = x + y
        ns = []  # each level's normalised input (the residual teach signal's VJP point)
        for i, w in enumerate(ws):  # Eq. 70: h <- h + MLP_i(Norm(h)), W = W0 + Delta
            ns.append(_rms(h, pb[f"cms_{i}"]["scale"], eps))
            h = h + _mlp(w, ns[-1])
        return h, state, ns

    return block


def segment_losses(p, mcfg, tokens_BT, deltas, truncate: bool, block=None, taps=None):
    """Per-segment summed next-token NLL [N] and logits [B, T, V] of the HOPE LM (params `p` =
    the LM's params["ntp"], scanned layers) with level i using W0 + deltas[i][c // m_i] in segment
    c (deltas[i]: {"gate", ...} each [windows, L, B, ...]; None = static level).

    `taps` (a list) collects, per segment, (final residual, [(layer, level, W0, window,
    normalised level input)]) for the residual teach signal (`residual_grad`)."""
    hc = mcfg.hope
    b, t = tokens_BT.shape
    s = min(q for q, d in zip(hc.cms_periods, deltas) if d is not None)
    block = block or _block_fn(mcfg)
    blocks = p["blocks"]["block"]
    emb = p["embed"]["embedding"]
    nxt = jnp.concatenate([tokens_BT[:, 1:], tokens_BT[:, -1:]], axis=1)
    ok = (jnp.arange(t) < t - 1)[None].astype(emb.dtype)
    states = [None] * mcfg.num_layers
    losses, logits = [], []
    for c in range(t // s):  # segments, then layers, in plain Python
        sl = slice(c * s, (c + 1) * s)
        pos = jnp.broadcast_to(jnp.arange(c * s, (c + 1) * s), (b, s))
        x = emb[tokens_BT[:, sl]]
        for layer in range(mcfg.num_layers):
            pb = jax.tree_util.tree_map(lambda a, layer=layer: a[layer], blocks)
            ws = []
            for i, dl in enumerate(deltas):
                lv = pb[f"cms_{i}"]
                w = {k: jnp.broadcast_to(lv[k], (b,) + lv[k].shape) for k in KEYS}
                if dl is not None:
                    m = hc.cms_periods[i] // s
                    w = {k: w[k] + dl[k][c // m, layer] for k in KEYS}
                ws.append(w)
            st = states[layer]
            if truncate and st is not None:  # the driver's truncation: carried state constant
                st = jax.lax.stop_gradient(st)
            x, states[layer], ns = block(pb, x, pos, st, ws)
            if taps is not None:
                taps.append((c, layer, [(i, pb[f"cms_{i}"], c // (hc.cms_periods[i] // s), ns[i])
                                        for i, dl in enumerate(deltas) if dl is not None]))
        if taps is not None:
            taps.append((c, x))
        lg = _rms(x, p["final_norm"]["scale"], mcfg.norm_eps) @ emb.T
        nll = optax.softmax_cross_entropy_with_integer_labels(lg, nxt[:, sl])
        losses.append(jnp.sum(nll * ok[:, sl]))
        logits.append(lg)
    return jnp.stack(losses), jnp.concatenate(logits, axis=1)


def residual_grad(p, mcfg, tokens_BT, deltas, weights_N, block):
    """The `cms_grad="residual"` inner gradient, written out: with g_c = d(segment c's loss) /
    d(its final residual) (through the final norm and head only), every level's gradient is
    sum_c weights_c * VJP of MLP_{W0 + Delta}(n) at its input n in segment c, cotangent g_c."""
    taps = []
    segment_losses(p, mcfg, tokens_BT, deltas, True, block, taps)
    emb, b = p["embed"]["embedding"], tokens_BT.shape[0]
    s = min(q for q, d in zip(mcfg.hope.cms_periods, deltas) if d is not None)
    nxt = jnp.concatenate([tokens_BT[:, 1:], tokens_BT[:, -1:]], axis=1)
    ok = (jnp.arange(tokens_BT.shape[1]) < tokens_BT.shape[1] - 1)[None].astype(emb.dtype)
    finals = {t[0]: t[1] for t in taps if len(t) == 2}
    g = {}
    for c, h in finals.items():
        sl = slice(c * s, (c + 1) * s)
        g[c] = jax.grad(lambda h, sl=sl: jnp.sum(optax.softmax_cross_entropy_with_integer_labels(
            _rms(h, p["final_norm"]["scale"], mcfg.norm_eps) @ emb.T, nxt[:, sl]) * ok[:, sl]))(h)

    def inner_product(dl):  # sum of <g_c, MLP(n)>: its gradient is the sum of the VJPs
        tot = 0.0
        for c, layer, levels in (t for t in taps if len(t) == 3):
            for i, lv, w, n in levels:
                wts = {k: jnp.broadcast_to(lv[k], (b,) + lv[k].shape) + dl[i][k][w, layer]
                       for k in KEYS}
                tot = tot + weights_N[c] * jnp.sum(g[c] * _mlp(wts, n))
        return tot

    return jax.grad(inner_product)(deltas)


def reference_updates(p, mcfg, tokens_BT, truncate: bool, nested: bool = False,
                      residual: bool = False):
    """Runs Eq. 71 window by window. Returns (deltas, logits): every level's Delta per window
    and the logits of the LM run with them. `nested`: at a boundary of level i+1 the faster level
    i restarts from its initial state W0 (Delta = 0, Eq. 72). `residual`: each window's gradient
    is `residual_grad`'s instead of the plain jax.grad through the sequence."""
    hc = mcfg.hope
    b, t = tokens_BT.shape
    dyn = [0 < q < t for q in hc.cms_periods]
    s = min(q for q, d in zip(hc.cms_periods, dyn) if d)
    n = t // s
    nl, d, f = mcfg.num_layers, mcfg.d_model, mcfg.hidden
    shapes = {"gate": (d, f), "up": (d, f), "down": (f, d)}
    deltas = [None if not live else
              {k: jnp.zeros((n * s // q, nl, b) + sh, jnp.float64) for k, sh in shapes.items()}
              for q, live in zip(hc.cms_periods, dyn)]

    block = _block_fn(mcfg)

    def window_grad(deltas, weights_N):  # eager: plain jax.grad through the whole sequence
        if residual:
            return residual_grad(p, mcfg, tokens_BT, deltas, weights_N, block)
        return jax.grad(lambda dl: jnp.sum(
            weights_N * segment_losses(p, mcfg, tokens_BT, dl, truncate, block)[0]))(deltas)

    for c in range(n):
        new = {}
        for i, live in enumerate(dyn):
            m = hc.cms_periods[i] // s
            if not live or (c + 1) % m or (c + 1) * s >= t:  # no boundary / no later window
                continue
            w = c // m
            weights = (jnp.arange(n) // m == w).astype(jnp.float64)
            g = window_grad(deltas, weights)[i]
            new[i] = {k: deltas[i][k][w] - hc.cms_lr * g[k][w] for k in KEYS}
        for i, upd in new.items():
            slow = i + 1 < len(dyn) and dyn[i + 1] and (c + 1) % (hc.cms_periods[i + 1] // s) == 0
            if nested and slow:
                upd = jax.tree_util.tree_map(jnp.zeros_like, upd)
            w = c // (hc.cms_periods[i] // s)
            deltas[i] = {k: deltas[i][k].at[w + 1].set(upd[k]) for k in KEYS}
    return deltas, segment_losses(p, mcfg, tokens_BT, deltas, truncate, block)[1]
