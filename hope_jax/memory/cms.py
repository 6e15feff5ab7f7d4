"""Continuum Memory System (CMS, SPEC §3, Eqs. 70-74, decision §7.0).

A CMS is a chain of MLP levels ordered fast -> slow; level l has an update period P_l in tokens
(0 = never: a static FFN trained only by the outer optimizer). Each level is a pre-norm residual
SwiGLU block (SPEC A5): h <- h + MLP_l(Norm(h)). Its weights at time t are W_l = W0_l + Delta_l(t):
W0_l is the meta-learned initial state (an ordinary param, SPEC Eq. 73) and Delta_l the per-sequence
fast part, which changes only at multiples of P_l (Eq. 71):

    Delta_l <- Delta_l - eta_l * sum_{t in the last P_l tokens} grad_W f(W_l at window start; x_t)

with f the update signal of `config.model.hope.cms_signal`:
  * `ntp`   the next-token loss of the whole model (the paper's reading): the LM runs in segments
            of the fastest period (`hope_jax.models.lm`), takes the gradient of each segment's NTP
            loss w.r.t. every Delta and calls `boundary_update` here;
  * `local` the level's own delta-rule objective 1/2 ||MLP_l(n_t) - n_{t+1}||^2 on its normed
            input n (predict the next position's input; our non-paper fallback), level by level with
            `chunked_scan` (`local_level`);
  * `outer` no in-context update; the outer optimizer updates the level every P_l optimizer steps
            with the gradients accumulated in between (`outer_level_labels` + optax.MultiSteps).

Documents (SPEC A17): a document that starts inside a level's window uses Delta = 0 (the initial
weights W0) until the window ends; at the boundary Delta is rebuilt from that document's own
gradients only (`boundary_update`), so no information crosses a document boundary and a document
learns exactly as if it were alone. (Documents shorter than the fastest period that begin in the
same segment pool their gradients: a documented approximation.)

Shape legend: B batch, T time, S segment (fastest period), D width, F hidden.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from hope_jax.memory.scan import chunked_scan

LEVEL_KEYS = ("gate", "up", "down")


def swiglu(w: dict, n_BTD):
    """SwiGLU with weights {"gate": [.., D, F], "up": [.., D, F], "down": [.., F, D]}; a leading
    batch dim on the weights means per-sequence fast weights."""
    per_seq = w["gate"].ndim == 3
    eq_in, eq_out = ("btd,bdf->btf", "btf,bfd->btd") if per_seq else ("btd,df->btf", "btf,fd->btd")
    dt = n_BTD.dtype
    g = jnp.einsum(eq_in, n_BTD, w["gate"].astype(dt))
    u = jnp.einsum(eq_in, n_BTD, w["up"].astype(dt))
    return jnp.einsum(eq_out, nn.silu(g) * u, w["down"].astype(dt))


def _bcast_B(x_B, like):
    return x_B.reshape(x_B.shape + (1,) * (like.ndim - 1))


def rms_norm(x_BTD, scale_D, eps: float):
    f32 = jnp.promote_types(x_BTD.dtype, jnp.float32)
    x = x_BTD.astype(f32)
    y = x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps)
    return y * scale_D.astype(f32)[None, None, :]


def level_forward(p: dict, h_BTD, delta=None, keep_BT=None, eps: float = 1e-6, dtype=None,
                  z=None):
    """h + MLP(Norm(h)) with weights W0 (+ per-sequence Delta for tokens where keep_BT).

    Args:
      p: the level's params {"scale", "gate", "up", "down"} (W0).
      h_BTD: residual stream.
      delta: None (static) or per-sequence fast part {"gate", "up", "down"} with leading B.
      keep_BT: tokens that use W0 + Delta; the others (a document begun in this window) use
        W0 + z, where z is a zero-valued Delta-shaped input whose gradient collects the new
        document's contribution to the next update (module doc).
    """
    n = rms_norm(h_BTD, p["scale"], eps).astype(dtype or h_BTD.dtype)
    w0 = {k: p[k] for k in LEVEL_KEYS}
    if delta is None:
        return h_BTD + swiglu(w0, n).astype(h_BTD.dtype)
    y = swiglu({k: w0[k][None] + delta[k] for k in LEVEL_KEYS}, n)
    if keep_BT is not None:
        fresh = (lambda: swiglu(w0, n)) if z is None else (
            lambda: swiglu({k: w0[k][None] + z[k] for k in LEVEL_KEYS}, n))
        y = jax.lax.cond(jnp.all(keep_BT), lambda: y,
                         lambda: jnp.where(keep_BT[..., None], y, fresh()))
    return h_BTD + y.astype(h_BTD.dtype)


def local_loss(p: dict, w: dict, h_BTD, next_ok_BT, eps: float = 1e-6):
    """Sum over tokens of 1/2 ||MLP_w(n_t) - n_{t+1}||^2 (the `local` signal, module doc)."""
    n = rms_norm(h_BTD, p["scale"], eps)
    target = jax.lax.stop_gradient(jnp.concatenate([n[:, 1:], n[:, -1:]], axis=1))
    err = swiglu(w, n) - target
    return 0.5 * jnp.sum(jnp.sum(err * err, -1) * next_ok_BT)


class CMSLevel(nn.Module):
    """One level's meta-learned initial state W0 (+ norm scale): `__call__(d)` returns the params.

    The math is in the pure functions above, so that the same level can be applied inside any
    JAX transform (the `ntp` chunk scan, the `local` window scan) without Flax lifting.
    """

    hidden: int
    std: float = 0.02
    out_std: float = 0.02
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, d: int) -> dict:
        init = lambda std, axes: nn.with_logical_partitioning(nn.initializers.normal(std), axes)
        ones = nn.with_logical_partitioning(nn.initializers.ones, ("embed",))
        f, pdt = self.hidden, self.param_dtype
        return {
            "scale": self.param("scale", ones, (d,), pdt),
            "gate": self.param("gate", init(self.std, ("embed", "mlp")), (d, f), pdt),
            "up": self.param("up", init(self.std, ("embed", "mlp")), (d, f), pdt),
            "down": self.param("down", init(self.out_std, ("mlp", "embed")), (f, d), pdt),
        }


def dynamic_levels(periods: tuple[int, ...], context: int) -> tuple[bool, ...]:
    """A level updates in context iff 0 < period < context (else it is a static FFN, §7.0)."""
    return tuple(0 < p < context for p in periods)


def doc_starts(segment_ids_BT, positions_BT):
    """True where a new document begins (segment change or position 0), never at t = 0."""
    prev = jnp.concatenate([segment_ids_BT[:, :1], segment_ids_BT[:, :-1]], axis=1)
    start = (segment_ids_BT != prev) | (positions_BT == 0)
    return start.at[:, 0].set(False)


def keep_mask(reset_B, starts_BS):
    """keep[b, t]: no document start since the level's window began, up to and including t."""
    return ~(reset_B[:, None] | (jnp.cumsum(starts_BS.astype(jnp.int32), axis=1) > 0))


def boundary_update(delta, acc, acc_z, reset_B, grads, grads_z, starts_BS, at_boundary,
                    lr: float):
    """Accumulates one segment's gradients and applies Eq. 71 at a level boundary.

    Args:
      delta: per-sequence fast part (leaves [B, ...]).
      acc: summed gradients w.r.t. delta of the tokens that used it (no document start before
        them in the window).
      acc_z: summed gradients of the tokens of the document begun in this window (they used W0).
      reset_B: a document began in this level's current window (before this segment).
      grads, grads_z: this segment's gradients for the two groups of tokens.
      starts_BS: document starts inside this segment.
      at_boundary: scalar bool, the window ends with this segment.
      lr: eta_l.

    Returns:
      (delta, acc, acc_z, reset_B) after the segment. At a boundary Delta <- Delta - lr * acc, or,
      if a document began in the window, Delta <- -lr * acc_z (the new document's own gradients
      at W0: nothing of the previous document survives). Several documents beginning inside one
      segment pool their gradients (documents shorter than the fastest period).
    """
    new_start = jnp.any(starts_BS, axis=1)
    acc = jax.tree_util.tree_map(jnp.add, acc, grads)
    acc_z = jax.tree_util.tree_map(
        lambda a, g: jnp.where(_bcast_B(new_start, a), g, a + g), acc_z, grads_z)
    reset_B = reset_B | new_start
    stepped = jax.tree_util.tree_map(
        lambda d, a, az: jnp.where(_bcast_B(reset_B, d), -lr * az, d - lr * a), delta, acc, acc_z)
    delta = jax.tree_util.tree_map(lambda s, d: jnp.where(at_boundary, s, d), stepped, delta)
    clear = lambda a: jnp.where(at_boundary, jnp.zeros_like(a), a)
    acc, acc_z = jax.tree_util.tree_map(clear, acc), jax.tree_util.tree_map(clear, acc_z)
    reset_B = jnp.where(at_boundary, False, reset_B)
    return delta, acc, acc_z, reset_B


def zeros_delta(p: dict, batch: int) -> dict:
    """Per-sequence Delta = 0 shaped like the level's weights, fp32 (>= fp32 under x64)."""
    return {k: jnp.zeros((batch,) + p[k].shape, jnp.promote_types(p[k].dtype, jnp.float32))
            for k in LEVEL_KEYS}


def local_level(p: dict, h_BTD, segment_ids_BT, positions_BT, period: int, lr: float,
                persist: bool = False, eps: float = 1e-6):
    """Runs one level with the `local` signal over a whole sequence (one scan over windows).

    Window c uses W0 + Delta_c (Delta_c from windows < c, read-before-write, SPEC A1); after the
    window, Delta_{c+1} = Delta_c - lr * sum_t grad of the local loss at W0 + Delta_c.
    """
    b, t, _ = h_BTD.shape
    w0 = {k: p[k] for k in LEVEL_KEYS}
    starts = jnp.zeros((b, t), bool) if persist else doc_starts(segment_ids_BT, positions_BT)
    nxt = jnp.concatenate([segment_ids_BT[:, 1:] == segment_ids_BT[:, :-1],
                           jnp.zeros((b, 1), bool)], axis=1) & (segment_ids_BT > 0)
    nxt = nxt & ~jnp.concatenate([starts[:, 1:], jnp.zeros((b, 1), bool)], axis=1)
    nxt = nxt & (jnp.arange(t) % period != period - 1)[None]  # its target is in the next window

    def body(carry, xc):
        delta, reset = carry
        h, st, ok = xc["h"], xc["starts"], xc["next_ok"]
        keep = keep_mask(reset, st)
        out = level_forward(p, h, delta, keep, eps)
        w = jax.tree_util.tree_map(lambda a, dl: a[None] + dl, w0, delta)
        fresh = jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a[None], (b,) + a.shape), w0)
        g = jax.grad(lambda w: local_loss(p, w, h, ok & keep, eps))(w)
        g_z = jax.grad(lambda w: local_loss(p, w, h, ok & ~keep, eps))(fresh)
        acc0 = jax.tree_util.tree_map(jnp.zeros_like, delta)
        delta, _, _, reset = boundary_update(delta, acc0, acc0, reset, g, g_z, st,
                                             jnp.array(True), lr)
        return (delta, reset), out

    carry0 = (zeros_delta(p, b), jnp.zeros((b,), bool))
    xs = {"h": h_BTD, "starts": starts, "next_ok": nxt}
    _, out = chunked_scan(body, carry0, xs, chunk_size=period, axis=1)
    return out


def outer_level_labels(tree, periods: tuple[int, ...], signal: str, is_leaf=None):
    """Labels per param: "cms_outer_<P>" for levels with the `outer` signal, else "rest".

    CMS level l of any block lives under a module named `cms_<l>` (see models/hope.py); `tree` is
    the params (or any pytree of the same structure, e.g. logical axes with `is_leaf`).
    """

    def label(path, _):
        if signal != "outer":
            return "rest"
        for part in path:
            name = getattr(part, "key", getattr(part, "name", ""))
            if isinstance(name, str) and name.startswith("cms_") and name[4:].isdigit():
                p = periods[int(name[4:])]
                return f"cms_outer_{p}" if p > 1 else "rest"
        return "rest"

    return jax.tree_util.tree_map_with_path(label, tree, is_leaf=is_leaf)


def wrap_outer_levels(tx, tree, periods: tuple[int, ...], signal: str, is_leaf=None):
    """The `outer` signal (SPEC §7.0): level params get `tx`'s update once every P optimizer steps,
    from the gradients averaged over those steps (optax.MultiSteps); everything else every step."""
    labels = outer_level_labels(tree, periods, signal, is_leaf)
    names = set(jax.tree_util.tree_leaves(labels))
    if names <= {"rest"}:
        return tx
    transforms = {"rest": tx}
    for name in names - {"rest"}:
        every = int(name.rsplit("_", 1)[1])
        transforms[name] = optax.MultiSteps(tx, every_k_schedule=every).gradient_transformation()
    return optax.multi_transform(transforms, labels)
