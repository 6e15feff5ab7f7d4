"""Closed-form chunk update of a residual 2-layer MLP memory (the fast path of `self_modifying`).

One chunk of C tokens, one (sequence, head, memory), row-vector convention (SPEC A11). The rule
is the engine's `dgd()` / `titans()` per-token step (SPEC Eq. 88 + A6 + A9):

  S_t = beta_t S_{t-1} - eta_t g_t                  (each layer; beta = 0 without momentum)
  W_t = alpha_t W_{t-1} + S_t  [- eta_t k_t (k_t^T W_{t-1})  on W_0 under DGD]

with every g_t taken at the chunk-start (reference) weights (A1), so only the END state of the
chunk is needed (reads are read-before-write). Unrolling, with D[t, i] = prod_{i<l<=t} alpha_l
and B[t, j] = prod_{j<l<=t} beta_l (C x C, from cumulative log-gates):

  S_C = B[C, 0] S_0 + sum_j B[C, j] (-eta_j) g_j
  W_C = D[C, 0] W_0 + c0 S_0 + sum_j c_j (-eta_j) g_j  [+ sum_t D[C, t] k_t e_t  under DGD]
  c_j = sum_t D[C, t] B[t, j],  c0 = sum_t D[C, t] B[t, 0]

Per-token gradients are outer products (g_0 = k^T delta, g_1 = h^T r), so every weighted sum is
one matmul (K^T diag(c) Delta) and no per-token gradient is materialised (SPEC §4.4, §7.1). The
DGD rows e_t = -eta_t k_t^T W_{t-1} solve a unit lower-triangular C x C system (the delta-rule
"UT" form): (I + diag(eta) (Dm o K K^T)) E = -diag(eta) [Gamma_prev o K W_0 + sig o K S_0
- (Mm o K K^T) diag(eta) Delta], Dm[t, i] = D[t-1, i] (i < t), Mm = Dm diag(nu) B, sig =
Dm (nu o B[:, 0]).

Documents and padding: tokens before the chunk's last document start (A4) or after the end of
the sequence are "skipped" (nu_t = 0: alpha = beta = 1, eta = 0, S not added), and the chunk
starts from the initial state when it holds a document start; equivalent to the per-token
reset of the step form because the reset wipes everything before it.

Shape legend: C chunk tokens, K key dim, F memory hidden width.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from hope_jax.memory.delta_chunk import unit_lower_inverse
from hope_jax.memory.rules import l2

_TINY = 1e-30  # log-gate floor: a gate below it counts as 0 (exp(-69) products vanish anyway)


def _decay(a_C):
    """(D, L): D[t, i] = prod_{i<l<=t} a_l for i <= t (else 0), L = cumsum(log a)."""
    c = a_C.shape[0]
    log_l = jnp.cumsum(jnp.log(jnp.maximum(a_C, _TINY)))
    mask = jnp.tril(jnp.ones((c, c), bool))
    diff = jnp.where(mask, log_l[:, None] - log_l[None, :], 0.0)  # double where: safe grads
    return jnp.where(mask, jnp.exp(diff), 0.0), log_l


def supports(arch) -> bool:
    """The closed form is written for the residual 2-layer MLP memory of Eq. 89 (with or without
    the RMS-normalised output, `MemoryArch.out_norm`)."""
    return arch.kind == "mlp" and arch.depth == 2 and arch.residual


def closed_form_write(arch, use_dgd, init_w, w, s, after_C, reset_C, k_CK, v_CK, gates_C,
                      valid_C, self_target):
    """End-of-chunk (weights, opt state) of one memory; same contract as the step form.

    Args:
      arch: the memory (`supports(arch)`).
      use_dgd: DGD (the k k^T decay on W_0, A9) or plain GD with retention.
      init_w, (w, s): initial weights; chunk-start weights and opt state (((S_0, S_1),) with
        momentum, else ()).
      after_C / reset_C: token after / at a document start in this chunk (or None).
      k_CK, v_CK: keys (unit norm) and values; gates_C: lr, optional momentum and retain.
      valid_C: False for padding tokens (or None).
      self_target: the inner target is M(W_ref; v) (Eq. 87), else v.
    """
    c, dt = k_CK.shape[0], k_CK.dtype
    momentum = "momentum" in gates_C
    nu = jnp.ones((c,), dt) if valid_C is None else valid_C.astype(dt)

    def fwd(wr):  # per-token hidden h and output errors r (layer 1), d (layer 0) at weights wr
        # target M(W_ref; v): a constant of the inner gradient (A15), differentiable outside (A14)
        tgt = arch.apply(wr, v_CK) if self_target else v_CK
        (_, h), (d, r) = arch.backprop(wr, k_CK, tgt, l2)  # g_0 = k^T d, g_1 = h^T r
        return h, r, d

    h, r, d = fwd(w)  # every token's gradient at the chunk-start weights (A1)
    start_w, start_s = w, s
    if reset_C is not None:
        sel = lambda a, b: jnp.where(after_C[:, None], b, a)
        h, r, d = (sel(a, b) for a, b in zip((h, r, d), fwd(init_w)))
        later = jnp.cumsum(reset_C[::-1].astype(jnp.int32))[::-1] - reset_C.astype(jnp.int32)
        nu = nu * (later == 0)  # tokens before the last document start: wiped by it (A4)
        anyr = jnp.any(reset_C)
        start_w = jax.tree_util.tree_map(lambda a, b: jnp.where(anyr, b, a), w, init_w)
        start_s = jax.tree_util.tree_map(lambda a: jnp.where(anyr, 0.0, a), s)
    eta = nu * gates_C["lr"]
    alpha = nu * gates_C["retain"] + (1 - nu) if "retain" in gates_C else jnp.ones((c,), dt)
    dmat, log_l = _decay(alpha)
    dc = dmat[-1]  # D[C, t]
    if momentum:
        bmat, log_b = _decay(nu * gates_C["momentum"] + (1 - nu))
        bs0 = jnp.exp(log_b)  # B[t, 0]
        s0, s1 = start_s[0]
    else:  # S_t = -eta_t g_t: B = I, and S_0 = 0
        bmat, bs0 = jnp.eye(c, dtype=dt), jnp.zeros((c,), dt)
        s0, s1 = (jnp.zeros_like(x) for x in start_w)
    cw = -eta * ((dc * nu) @ bmat)  # coefficient of g_j in W_C
    c0 = jnp.sum(dc * nu * bs0)
    sum0 = lambda coef: k_CK.T @ (coef[:, None] * d)  # sum_j coef_j g0_j = K^T diag(coef) Delta
    sum1 = lambda coef: h.T @ (coef[:, None] * r)  # sum_j coef_j g1_j = H^T diag(coef) R
    w0, w1 = start_w
    gamma = jnp.exp(log_l[-1])
    new_w0 = gamma * w0 + c0 * s0 + sum0(cw)
    new_w1 = gamma * w1 + c0 * s1 + sum1(cw)
    if use_dgd:  # rows e_t = -eta_t k_t^T W_{t-1} by the unit-triangular solve
        dm = jnp.concatenate([jnp.zeros((1, c), dt), dmat[:-1]], 0)  # D[t-1, i], i < t
        gamma_prev = jnp.exp(jnp.concatenate([jnp.zeros((1,), dt), log_l[:-1]]))
        kk = k_CK @ k_CK.T
        mm = dm @ (nu[:, None] * bmat)
        sig = dm @ (nu * bs0)
        rhs = (gamma_prev[:, None] * (k_CK @ w0) + sig[:, None] * (k_CK @ s0)
               - (mm * kk) @ (eta[:, None] * d))
        # the C x C system depends only on k and the gates, which all memories of the layer
        # share (Eq. 88): invert it once (unbatched under their vmap), then one matmul each
        # by matmuls (`unit_lower_inverse`): LAPACK's triangular solve hung under XLA:CPU's
        # thread pool mid-training (idle threads, no progress)
        linv = unit_lower_inverse(jnp.tril(eta[:, None] * (dm * kk), -1))
        e = linv @ (-eta[:, None] * rhs)
        new_w0 = new_w0 + k_CK.T @ (dc[:, None] * e)
    if not momentum:
        return (new_w0, new_w1), ()
    cs = -eta * bmat[-1]  # coefficient of g_j in S_C
    return (new_w0, new_w1), ((bs0[-1] * s0 + sum0(cs), bs0[-1] * s1 + sum1(cs)),)
