"""Slow, obviously-correct token-by-token twin of `self_modifying_scan` (tests only).

Written straight from SPEC Eqs. 83-89 (+ A1, A7, A15), independently of the chunked code: one
`lax.scan` step per token and per (sequence, head), gradients by autodiff of the spec's inner
objective, the update by the spec's optimizer's own per-token `step` (so this is the reference of
ANY rule; the DGD/GD formulas themselves are golden-tested in tests/test_memory_rules.py).

  at t mod C_other == 0: R_m <- W_m for m in the k/v/eta/alpha(/q) memories   (A1)
  at t mod C == 0:       R_mem <- W_mem
  at a document start:   W_m, S_m, R_m <- W_m,0, 0, W_m,0  for every memory      (A4)
  k = l2n(M(R_k; x^k)), v = M(R_v; x^v), q = l2n(x^q W_q) (or M(R_q; x^q)),   (Eq. 83/86, A8)
  eta = lr_max sig(w . M(R_eta; x^eta) + b), alpha = sig(-(w . M(R_alpha; x^alpha) + b)),
  beta = sig(static logit)                                                      (A7, A6)
  y = M(R_mem; q)                                                                (Eq. 83)
  for every memory m: v^ = M(R_m; v) (M_mem: v if not self_target)               (Eq. 87, A15)
      g = d/dW objective(M(W; k), v^) at W = R_m                                 (A11)
      (W_m, S_m) <- optimizer.step(W_m, S_m, g, (k, v^, gates))                  (Eq. 88, A6, A9)
With both chunk sizes 1, R is the previous token's state: the exact per-token recurrence.

Shape legend: B batch, H heads, T time, K head dim.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hope_jax.memory.optimizers import TokenContext
from hope_jax.memory.self_modifying import SelfModSpec


def _mlp(w, x_K, arch):
    """Residual 2-layer MLP memory x + sigma(x W_0) W_1 (Eq. 89, row vectors); with `out_norm`
    the MLP branch is RMS-normalised: x + u / sqrt(mean(u^2) + 1e-6), with `out_gain` times the
    fast gain vector w[2]."""
    u = jax.nn.gelu(x_K @ w[0]) @ w[1]
    if arch.out_norm:
        u = u / jnp.sqrt(jnp.mean(u * u) + 1e-6)
    if arch.out_gain:
        u = u * w[2].reshape(u.shape)
    return x_K + u


def _grad(loss, w, max_norm):
    """grad loss(w), scaled to global norm <= max_norm when max_norm > 0."""
    g = jax.grad(loss)(w)
    if not max_norm:
        return g
    norm = jnp.sqrt(sum(jnp.sum(x * x) for x in g))
    return tuple(x * jnp.minimum(1.0, max_norm / norm) for x in g)


def _unit(x_K):
    return x_K * jax.lax.rsqrt(jnp.sum(x_K * x_K) + 1e-6)


def _sig(x):
    return 1.0 / (1.0 + jnp.exp(-x))


def _split(spec, tree):
    """{"aux": leaves [M, ...], "mem": ...} -> {name: ...} in the order of spec.adaptive."""
    out = {"mem": tree["mem"]}
    for m, n in enumerate(spec.adaptive):
        out[n] = jax.tree_util.tree_map(lambda a, m=m: a[m], tree["aux"])
    return out


def _one(spec: SelfModSpec, consts, fast, xs, reset_T, valid_T):
    init, read = _split(spec, consts["init"]), consts["read"]
    mlp = lambda w, x: _mlp(w, x, spec.mem.arch)
    names = spec.adaptive + ("mem",)
    opt, objective = spec.mem.optimizer, spec.mem.objective
    momentum = "momentum" in spec.gates
    zero_s = {n: tuple(opt.init(init[n])) for n in names}

    def step(carry, inp):
        w, s, ref = carry
        i, x_t, r_t, ok_t = inp
        period = lambda n: spec.mem.chunk_size if n == "mem" else spec.other_chunk_size
        ref = {n: jax.tree_util.tree_map(lambda a, b, n=n: jnp.where(i % period(n) == 0, a, b),
                                         w[n], ref[n]) for n in names}
        pick = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(r_t, a, b), new, old)
        w0, s0, ref0 = w, s, ref
        w, s, ref = pick(init, w), pick(zero_s, s), pick(init, ref)
        out = {n: mlp(ref[n], x_t["x"][m]) for m, n in enumerate(spec.adaptive)}
        vec = {n: out[n] if n in out else x_t[n] for n in ("q", "k", "v")}
        q, k, v = _unit(vec["q"]), _unit(vec["k"]), vec["v"]
        logit = dict(x_t["logits"])
        for n, (r_w, r_b) in read.items():
            logit[n] = jnp.sum(r_w * out[n]) + r_b
        gates = {"lr": spec.lr_max * _sig(logit["lr"])}
        if momentum:
            gates["momentum"] = _sig(logit["momentum"])
        if "retain" in spec.gates:
            gates["retain"] = _sig(-logit["retain"])
        y = mlp(ref["mem"], q)
        new_w, new_s = {}, {}
        for n in names:
            tgt = mlp(ref[n], v) if (n != "mem" or spec.self_target) else v
            g = _grad(lambda wn, tgt=tgt: objective(mlp(wn, k), tgt), ref[n],
                      spec.mem.arch.grad_clip)
            new_w[n], new_s[n] = opt.step(w[n], s[n], g, TokenContext(k, tgt, gates))
            new_s[n] = tuple(new_s[n])
        keep = lambda new, old: jax.tree_util.tree_map(lambda a, b: jnp.where(ok_t, a, b), new,
                                                       old)
        carry = keep((new_w, new_s, ref), (w0, s0, ref0))
        return carry, y

    fast = _split(spec, fast)
    w = {n: fast[n][0] for n in names}
    s = {n: tuple(fast[n][1]) for n in names}
    t = reset_T.shape[0]
    (w, s, _), y = jax.lax.scan(step, (w, s, w), (jnp.arange(t), xs, reset_T, valid_T))
    new = {"mem": (w["mem"], s["mem"])}
    if spec.adaptive:
        stack = lambda *a: jnp.stack(a, 0)
        new["aux"] = jax.tree_util.tree_map(stack, *[(w[n], s[n]) for n in spec.adaptive])
    return y, new


def reference_scan(spec: SelfModSpec, consts: dict, xs: dict, fast: dict, *, reset_BT=None,
                   valid_T=None):
    """Token-by-token twin of `self_modifying.self_modifying_scan` (same arguments and returns)."""
    b, h, t = (xs["x"] if "x" in xs else xs["q"]).shape[:3]
    reset = jnp.zeros((b, t), bool) if reset_BT is None else reset_BT
    valid = jnp.ones((t,), bool) if valid_T is None else valid_T
    xs = jax.tree_util.tree_map(lambda z: jnp.moveaxis(z, 2, 0), xs)  # time first per token

    def per_seq(cst, fst, x, r):
        return _one(spec, cst, fst, x, r, valid)

    # vmap over heads (axis 1 of fast / axis 2 of time-first xs) then batch
    f = jax.vmap(per_seq, (0, 0, 1, None))
    f = jax.vmap(f, (None, 0, 1, 0))
    y_BHTK, new = f(consts, fast, xs, reset)
    return y_BHTK, new
