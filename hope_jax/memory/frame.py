"""The Titans memory frame shared by `NeuralMemory` and `SelfModifyingTitans` (Titans §4.4).

Both layers are the same frame around a different inner loop:

  x -> per-memory input map silu(conv(x W)) (A16; the conv tail is carried across calls)
    -> [inner loop: `memory_scan` (Titans) or `self_modifying_scan` (HOPE, Eqs. 83-93)]
    -> RMSNorm per head * sigmoid(x W_g) -> output projection.

and carry the same state dict (leaves of leading dim B):

  fast:     {"mem": (params, opt_state)[, "aux": ...]}  fast weights and inner-optimizer state;
  conv:     {proj name: [B, W-1, H*K]}                  last inputs of each causal conv;
  conv_seg: [B, W-1]                                    their document ids;
  prev_seg: [B]                                         document id of the last token seen.

`prev_seg < 0` marks a FRESH state (`zero_state`, a pure function of the shapes): its fast
weights are replaced by the layer's meta-learned initial weights before the first token, so a
driver can build the carry without the params. The functions here are called inside the layers'
`nn.compact` `__call__` (their submodules and params belong to the calling layer; the param
names are the layers' own).

Shape legend: B batch, T time, D width, H heads, K head dim, W conv width, C chunk.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from hope_jax.nn.layers import DenseGeneral, RMSNorm, ShortConv


def pad_to_chunk(tree, multiple: int, axis: int, t: int):
    """Pads every leaf's time axis `axis` (length t) with zeros to a multiple of `multiple`.

    Returns:
      (padded tree, valid_T mask: True for the t real tokens; None when nothing was padded).
      Padded tokens are read but must never write (the engines take `valid`).
    """
    pad = (-t) % multiple
    if not pad:
        return tree, None
    padt = lambda z: jnp.pad(z, ((0, 0),) * axis + ((0, pad),) + ((0, 0),) * (z.ndim - axis - 1))
    return jax.tree_util.tree_map(padt, tree), jnp.arange(t + pad) < t


def zero_state(fast_shapes: dict, opt_init, batch: int, conv_names, conv_width: int,
               width: int, dtype) -> dict:
    """A fresh state without params: zero fast weights (replaced by the initial weights at the
    first token, see `begin`), zero conv tails, prev_seg = -1.

    Args:
      fast_shapes: {name: tuple of per-sequence weight shapes (H, ...)} of each fast memory.
      opt_init: the inner optimizer's `init` (state of zero weights, vmapped over B and H).
    """
    fast = {}
    for n, shapes in fast_shapes.items():
        p = tuple(jnp.zeros((batch,) + s, dtype) for s in shapes)
        fast[n] = (p, tuple(jax.vmap(jax.vmap(opt_init))(p)))
    wc = conv_width - 1
    return {"fast": fast, "conv": {n: jnp.zeros((batch, wc, width), dtype) for n in conv_names},
            "conv_seg": jnp.full((batch, wc), -1, jnp.int32),
            "prev_seg": jnp.full((batch,), -1, jnp.int32)}


def fresh_state(init: dict, opt_init, batch: int, conv_names, conv_width: int, width: int,
                dtype, seg_BT) -> dict:
    """The state before any token, from the initial weights {name: params [H, ...]}."""
    first = jnp.zeros((batch,), jnp.int32) if seg_BT is None else seg_BT[:, 0].astype(jnp.int32)
    fast = {}
    for n, p in init.items():
        p = jax.tree_util.tree_map(lambda w: jnp.broadcast_to(w, (batch,) + w.shape), p)
        fast[n] = (p, tuple(jax.vmap(jax.vmap(opt_init))(p)))
    wc = conv_width - 1
    return {"fast": fast, "conv": {n: jnp.zeros((batch, wc, width), dtype) for n in conv_names},
            "conv_seg": jnp.broadcast_to(first[:, None], (batch, wc)), "prev_seg": first}


def begin(state: dict, init: dict, opt_init, dtype) -> dict:
    """Fast state cast to `dtype`; rows marked fresh (prev_seg < 0) start from `init`."""
    fresh_B = state["prev_seg"] < 0
    b = fresh_B.shape[0]
    pick = lambda new, old: jnp.where(fresh_B.reshape((b,) + (1,) * (old.ndim - 1)),
                                      new.astype(dtype), old.astype(dtype))
    fast = {}
    for n, (p, s) in state["fast"].items():
        p0 = jax.tree_util.tree_map(lambda w: jnp.broadcast_to(w, (b,) + w.shape), init[n])
        s0 = tuple(jax.vmap(jax.vmap(opt_init))(p0))
        fast[n] = (jax.tree_util.tree_map(pick, p0, p), jax.tree_util.tree_map(pick, s0, tuple(s)))
    return {**state, "fast": fast}


def conv_segments(state: dict, seg_BT):
    """Document ids of [conv tail | this call] (None without document ids)."""
    return None if seg_BT is None else jnp.concatenate([state["conv_seg"].astype(seg_BT.dtype),
                                                        seg_BT], 1)


def proj_conv(x_BTD, name: str, h: int, kd: int, conv_width: int, tail, seg_c, init_std: float,
              kw: dict):
    """silu(conv(x W)) per head (Titans §4.4, A16) with the conv tail carried.

    Returns:
      ([B, T, H, K] in the compute dtype, new tail [B, W-1, H*K] in the tail's dtype).
    """
    b, t, _ = x_BTD.shape
    wc = conv_width - 1
    y = DenseGeneral((h * kd,), ("embed",), ("heads",), init_std, name=name, **kw)(x_BTD)
    y = jnp.concatenate([tail.astype(y.dtype), y], 1)
    new_tail = y[:, y.shape[1] - wc:].astype(tail.dtype)
    y = ShortConv(conv_width, "heads", name=f"{name}_conv", **kw)(y, seg_c)[:, wc:]
    return nn.silu(y).reshape(b, t, h, kd), new_tail


def static_gate(mdl: nn.Module, x_BTD, name: str, h: int, bias_value: float, bias_dtype,
                gate_dtype, param_dtype, init_std: float):
    """Static gate logit x W + b per head ([B, T, H], in `gate_dtype`, SPEC A7)."""
    bias = gate_bias_param(mdl, name, h, bias_value, bias_dtype)
    lg = DenseGeneral((h,), ("embed",), ("heads",), init_std, name=f"{name}_gate",
                      dtype=gate_dtype, param_dtype=param_dtype)(x_BTD)
    return lg + bias.astype(gate_dtype)[None, None, :]


def gate_bias_param(mdl: nn.Module, name: str, h: int, value: float, dtype):
    """The per-head bias `{name}_bias` that sets a fresh gate's value."""
    return mdl.param(f"{name}_bias", nn.with_logical_partitioning(
        nn.initializers.constant(value), ("heads",)), (h,), dtype)


def output(x_BTD, y_BTHK, d: int, init_std: float, out_std: float, sdt, kw: dict):
    """RMSNorm per head * sigmoid(x W_g) -> output projection (Titans §4.4)."""
    h, kd = y_BTHK.shape[-2:]
    y = RMSNorm(axis_name="kv", param_dtype=kw["param_dtype"], name="out_norm")(y_BTHK)
    gate = DenseGeneral((h, kd), ("embed",), ("heads", "kv"), init_std, name="out_gate",
                        **kw)(x_BTD)
    y = (y * jax.nn.sigmoid(gate.astype(sdt))).astype(kw["dtype"])
    return DenseGeneral((d,), ("heads", "kv"), ("embed",), out_std, name="out", **kw)(y)


def end_state(state: dict, fast: dict, new_conv: dict, seg_BT, seg_c, conv_width: int) -> dict:
    """The state after this call."""
    new = {"fast": fast, "conv": new_conv, "conv_seg": state["conv_seg"],
           "prev_seg": state["prev_seg"]}
    if seg_BT is not None:
        wc = conv_width - 1
        new["conv_seg"] = seg_c[:, seg_c.shape[1] - wc:].astype(jnp.int32)
        new["prev_seg"] = seg_BT[:, -1].astype(jnp.int32)
    else:  # one document per row: a fresh state is no longer fresh after a call
        new["prev_seg"] = jnp.maximum(state["prev_seg"], 0)
    return new
