"""DGD's own closed-form chunk update (the `chunk` of `optimizers.dgd`, SPEC Eq. 88 + A6 + A9).

One chunk of C tokens, one (sequence, head, memory), row-vector convention (SPEC A11), gradients
at the chunk-start (reference) weights (A1), so only the END state is needed (read-before-write).
The rule is `optimizers.dgd`'s per-token step, with eta the (already rescaled) DGD coefficient:

  S_t = beta_t S_{t-1} - eta_t g_t                  (each layer; S = -eta g without momentum)
  W_t = alpha_t W_{t-1} + S_t  - eta_t k_t (k_t^T W_{t-1})   (the k k^T term on W_0 only)

Unrolling, with D[t, i] = prod_{i<l<=t} alpha_l and B[t, j] = prod_{j<l<=t} beta_l (C x C, from
cumulative log-gates):

  S_C = B[C, 0] S_0 + sum_j B[C, j] (-eta_j) g_j
  W_C = D[C, 0] W_0 + c0 S_0 + sum_j c_j (-eta_j) g_j  [+ sum_t D[C, t] k_t e_t  on W_0]
  c_j = sum_t D[C, t] B[t, j],  c0 = sum_t D[C, t] B[t, 0]

Per-token gradients are outer products (g_l = h_l^T delta_l, `MemoryArch.backprop`, any
objective), so every weighted sum is one matmul (H^T diag(c) Delta) and no per-token gradient is
materialised (SPEC §4.4, §7.1). The rows e_t = -eta_t k_t^T W_{0,t-1} solve a unit
lower-triangular C x C system (the delta-rule "UT" form): (I + diag(eta) (Dm o K K^T)) E =
-diag(eta) [Gamma_prev o K W_0 + sig o K S_0 - (Mm o K K^T) diag(eta) Delta_0],
Dm[t, i] = D[t-1, i] (i < t), Mm = Dm diag(nu) B, sig = Dm (nu o B[:, 0]).

Documents and padding: tokens before the chunk's last document start (A4) or marked invalid are
"skipped" (nu_t = 0: alpha = beta = 1, eta = 0, S not added), and the chunk starts from the
initial state when it holds a document start; equivalent to the per-token reset of the step
form because the reset wipes everything before it.

Shape legend: C chunk tokens, K key dim, F memory hidden width.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

_TINY = 1e-30  # log-gate floor: a gate below it counts as 0 (exp(-69) products vanish anyway)


def _decay(a_C):
    """(D, L): D[t, i] = prod_{i<l<=t} a_l for i <= t (else 0), L = cumsum(log a)."""
    c = a_C.shape[0]
    log_l = jnp.cumsum(jnp.log(jnp.maximum(a_C, _TINY)))
    mask = jnp.tril(jnp.ones((c, c), bool))
    diff = jnp.where(mask, log_l[:, None] - log_l[None, :], 0.0)  # double where: safe grads
    return jnp.where(mask, jnp.exp(diff), 0.0), log_l


def unit_lower_inverse(a_CC: jax.Array) -> jax.Array:
    """(I + A)^-1 for strictly lower-triangular A (batched over leading dims), by matmuls only.

    Recursive block forward substitution: with the inverses X_1, X_2 of two diagonal blocks,
      [[I + A_11, 0], [A_21, I + A_22]]^-1 = [[X_1, 0], [-X_2 A_21 X_1, X_2]],
    doubling the block size log2(C) times (all pairs of blocks at once). As stable as row-by-row
    substitution (FLA's kernels), unlike the power series sum_j (-A)^j, whose terms blow up for
    correlated keys. No LAPACK triangular solve: its CPU custom call hung under XLA's thread pool
    here, and matmuls map onto accelerators directly.
    """
    c = a_CC.shape[-1]
    lead = a_CC.shape[:-2]
    cp = 1 << max(0, (c - 1).bit_length())  # pad to a power of two (identity extension)
    a = jnp.pad(a_CC, [(0, 0)] * len(lead) + [(0, cp - c), (0, cp - c)])
    inv = jnp.ones(lead + (cp, 1, 1), a.dtype)  # inverses of the 1 x 1 diagonal blocks
    s = 1
    while s < cp:
        nb = cp // (2 * s)
        blocks = a.reshape(lead + (nb, 2 * s, nb, 2 * s))
        diag = jnp.moveaxis(jnp.diagonal(blocks, axis1=-4, axis2=-2), -1, -3)  # [.., nb, 2s, 2s]
        x = inv.reshape(lead + (nb, 2, s, s))
        x11, x22 = x[..., 0, :, :], x[..., 1, :, :]
        x21 = -(x22 @ diag[..., s:, :s] @ x11)
        top = jnp.concatenate([x11, jnp.zeros_like(x11)], axis=-1)
        inv = jnp.concatenate([top, jnp.concatenate([x21, x22], axis=-1)], axis=-2)
        s *= 2
    return inv.reshape(lead + (cp, cp))[..., :c, :c]


def dgd_chunk(momentum: bool, arch, objective, init_w, w, s, k_CK, tgt_CV, gates_C, reset_C,
              valid_C):
    """End-of-chunk (weights, opt state) of one memory under DGD; same contract as scanning
    `optimizers.dgd(momentum).step` over the chunk (the `InnerOptimizer.chunk` hook).

    Args:
      momentum: the rule has the momentum slot S (opt state ((S_l per layer),)), else ().
      arch, objective: the memory and its inner loss.
      init_w, (w, s): initial weights; chunk-start weights and opt state.
      k_CK, tgt_CV: keys and inner targets (per token, at its reference weights).
      gates_C: "lr" (the DGD coefficient eta'), optional "momentum", "retain".
      reset_C: token at a document start in this chunk (or None); valid_C: False = padding.
    """
    c, dt = k_CK.shape[0], k_CK.dtype
    nu = jnp.ones((c,), dt) if valid_C is None else valid_C.astype(dt)
    hs, ds = arch.backprop(w, k_CK, tgt_CV, objective)  # g_l = hs[l]^T ds[l] at chunk start
    start_w, start_s = w, s
    if reset_C is not None:
        after = jnp.cumsum(reset_C.astype(jnp.int32)) > 0
        hs_i, ds_i = arch.backprop(init_w, k_CK, tgt_CV, objective)
        sel = lambda a, b: jnp.where(after[:, None], b, a)
        hs, ds = list(map(sel, hs, hs_i)), list(map(sel, ds, ds_i))
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
        s_l = start_s[0]
    else:  # S_t = -eta_t g_t: B = I, and S_0 = 0
        bmat, bs0 = jnp.eye(c, dtype=dt), jnp.zeros((c,), dt)
        s_l = tuple(jnp.zeros_like(x) for x in start_w)
    cw = -eta * ((dc * nu) @ bmat)  # coefficient of g_j in W_C
    c0 = jnp.sum(dc * nu * bs0)
    wsum = lambda coef, l: hs[l].T @ (coef[:, None] * ds[l])  # sum_j coef_j g_l,j
    gamma = jnp.exp(log_l[-1])
    new_w = [gamma * wl + c0 * sl + wsum(cw, l) for l, (wl, sl) in enumerate(zip(start_w, s_l))]
    # rows e_t = -eta_t k_t^T W_{0,t-1} by the unit-triangular solve
    w0, s0 = start_w[0], s_l[0]
    dm = jnp.concatenate([jnp.zeros((1, c), dt), dmat[:-1]], 0)  # D[t-1, i], i < t
    gamma_prev = jnp.exp(jnp.concatenate([jnp.zeros((1,), dt), log_l[:-1]]))
    kk = k_CK @ k_CK.T
    mm = dm @ (nu[:, None] * bmat)
    sig = dm @ (nu * bs0)
    rhs = (gamma_prev[:, None] * (k_CK @ w0) + sig[:, None] * (k_CK @ s0)
           - (mm * kk) @ (eta[:, None] * ds[0]))
    # the C x C system depends only on k and the gates, which all memories of a layer share
    # (Eq. 88): under their vmap it is inverted once, by matmuls (`unit_lower_inverse`):
    # LAPACK's triangular solve hung under XLA:CPU's thread pool mid-training
    linv = unit_lower_inverse(jnp.tril(eta[:, None] * (dm * kk), -1))
    e = linv @ (-eta[:, None] * rhs)
    new_w[0] = new_w[0] + k_CK.T @ (dc[:, None] * e)
    if not momentum:
        return tuple(new_w), ()
    cs = -eta * bmat[-1]  # coefficient of g_j in S_C
    return tuple(new_w), (tuple(bs0[-1] * sl + wsum(cs, l) for l, sl in enumerate(s_l)),)
