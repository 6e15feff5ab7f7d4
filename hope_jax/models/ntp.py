"""The LM run segment by segment so that CMS levels learn in context from the next-token loss.

This is the paper's reading of the CMS update (SPEC Eq. 71, §7.0 `ntp`): with S the fastest CMS
period, the sequence is cut into T / S segments and the whole model runs inside one scan over
them (the structure of TTT-E2E). For segment c:

  1. the model processes the S tokens with the sequence-mixer state carried from segment c-1 and
     CMS weights W0_l + Delta_l (fast parts fixed since the level's last boundary);
  2. the segment's next-token loss (targets = the following input tokens of the same document,
     so the label of the segment's last token is the first token of segment c+1: already seen
     when the update is used, hence causal) is differentiated w.r.t. every Delta_l;
  3. each level accumulates its gradients and, at multiples of its period P_l, applies
     Delta_l <- Delta_l - eta * sum(grads) (memory/cms.py `boundary_update`); `nested` then
     restarts each faster level from its initial state W0 at the slower level's boundary
     (Eq. 72).

The outer gradient flows through these inner steps (second order) unless `cms_first_order`.
Logits are returned for every token, so the outer training loss is the usual one.
The segment is run by the one LM body (`models/lm.py` `LM` with a carry, named "ntp" in the
parameter tree); this module is only the driver around it.

Shape legend: B batch, T time, S segment, N segments, D width, V vocabulary, L layers.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from hope_jax.memory import cms
from hope_jax.models.config import ModelConfig
from hope_jax.models.registry import init_carry
from hope_jax.nn.layers import dtype_of
from hope_jax.sharding import constrain


def ntp_segment(cfg: ModelConfig, t: int) -> int:
    """The segment length S (fastest in-context CMS period) or 0 if no level learns in context."""
    hc = cfg.hope
    if hc.cms_signal != "ntp":
        return 0
    live = [p for p, d in zip(hc.cms_periods, cms.dynamic_levels(hc.cms_periods, t)) if d]
    return live[0] if live else 0


def nested_reinit(deltas: tuple, tokens_seen, periods: tuple[int, ...]) -> tuple:
    """Nested CMS (SPEC Eq. 72): at a boundary of level l+1 (after `tokens_seen` tokens) the faster
    level l's context ends and it restarts from its meta-learned initial state theta_0 = W0, an
    ordinary param trained by the outer optimizer (Delta_l = 0). Periods are nested (each divides
    the next, `HopeConfig.check`), so level l is at its own boundary then too."""
    out = list(deltas)
    for i in range(len(out) - 1):
        if out[i] is not None and deltas[i + 1] is not None:
            at = tokens_seen % periods[i + 1] == 0
            out[i] = jax.tree_util.tree_map(lambda d, at=at: jnp.where(at, jnp.zeros_like(d), d),
                                            out[i])
    return tuple(out)


def ntp_inputs(cfg: ModelConfig, tokens_BT, positions_BT, segment_ids_BT) -> dict:
    """Per-token inputs of the segment steps: tokens, positions, documents, next-token labels
    ("nxt"), which labels count ("ok": same document, not the row's last token) and document
    starts ("starts", none without `inner.doc_reset`), all [B, T]."""
    b = tokens_BT.shape[0]
    starts = jnp.zeros(tokens_BT.shape, bool)
    if cfg.inner.doc_reset:
        starts = cms.doc_starts(segment_ids_BT, positions_BT)
    nxt = jnp.concatenate([tokens_BT[:, 1:], tokens_BT[:, -1:]], axis=1)
    ok = jnp.concatenate([segment_ids_BT[:, 1:] == segment_ids_BT[:, :-1],
                          jnp.zeros((b, 1), bool)], axis=1) & (segment_ids_BT > 0)
    ok = ok & ~jnp.concatenate([starts[:, 1:], jnp.zeros((b, 1), bool)], axis=1)
    return {"tok": tokens_BT, "pos": positions_BT, "seg": segment_ids_BT, "nxt": nxt, "ok": ok,
            "starts": starts}


# logical axes of a level's per-sequence fast part (its SwiGLU weights with [L, B] in front):
# sharded over the mesh like the params they are copies of, where the batch leaves the axis free
FAST_AXES = {"gate": ("layers", "batch", "embed", "mlp"), "up": ("layers", "batch", "embed", "mlp"),
             "down": ("layers", "batch", "mlp", "embed")}


def constrain_levels(levels: tuple) -> tuple:
    """Sharding constraint on per-level fast parts (tuple of {gate, up, down} or None)."""
    return tuple(None if lv is None else {k: constrain(v, FAST_AXES[k]) for k, v in lv.items()}
                 for lv in levels)


def ntp_init(cfg: ModelConfig, batch: int, context: int, cache_len: int = 0) -> tuple:
    """The driver's carry before the first segment of a `context`-token sequence: (mixer states,
    per-level Delta, gradient sums, new-document gradient sums, reset flags, segment counter);
    `cache_len` (default `context`) sizes an attention mixer's KV cache."""
    dyn = cms.dynamic_levels(cfg.hope.cms_periods, context)
    fdt = jnp.promote_types(dtype_of(cfg.param_dtype), jnp.float32)
    shapes = {"gate": (cfg.d_model, cfg.hidden), "up": (cfg.d_model, cfg.hidden),
              "down": (cfg.hidden, cfg.d_model)}
    zeros = {k: jnp.zeros((cfg.num_layers, batch) + sh, fdt) for k, sh in shapes.items()}
    deltas0 = constrain_levels(tuple(zeros if d else None for d in dyn))
    resets0 = tuple(jnp.zeros((batch,), bool) if d else None for d in dyn)
    mixer0 = init_carry(cfg, batch, cache_len or context)["mixer"]  # KV cache / fresh state
    return (mixer0, deltas0, deltas0, deltas0, resets0, jnp.zeros((), jnp.int32))


def _seg_loss(mdl, cfg, deltas, zs, states, xs, keeps):
    keeps_L = jax.tree_util.tree_map(lambda k: jnp.broadcast_to(k, (cfg.num_layers,) + k.shape),
                                     keeps)
    layer_carry = {"mixer": states, "deltas": deltas, "keeps": keeps_L, "zs": zs}
    logits, new = mdl(xs["tok"], xs["pos"], xs["seg"], layer_carry)
    fdt = jnp.promote_types(dtype_of(cfg.param_dtype), jnp.float32)  # fp32, fp64 under x64
    nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(fdt), xs["nxt"])
    return jnp.sum(nll * xs["ok"]), (logits, new["mixer"])


def _keeps(carry, xs):
    return tuple(None if r is None else cms.keep_mask(r, xs["starts"]) for r in carry[4])


def ntp_logits(mdl: nn.Module, cfg: ModelConfig, carry: tuple, xs: dict):
    """Logits of one (possibly partial) segment from the driver's carry, without committing it."""
    states, deltas = carry[0], carry[1]
    zs = jax.tree_util.tree_map(jnp.zeros_like, deltas)
    return _seg_loss(mdl, cfg, deltas, zs, states, xs, _keeps(carry, xs))[1][0]


def ntp_step(mdl: nn.Module, cfg: ModelConfig, context: int, carry: tuple, xs: dict):
    """One segment (module doc, steps 1-3): returns (carry after it, its logits [B, S, V]).

    `xs` are the segment's `ntp_inputs` (labels included: the label of its last token is the
    next segment's first token); `context` is the sequence length (which levels are dynamic)."""
    hc = cfg.hope
    s = ntp_segment(cfg, context)
    dyn = cms.dynamic_levels(hc.cms_periods, context)
    states, deltas, accs, acc_zs, resets, c = carry
    keeps = _keeps(carry, xs)
    zs = jax.tree_util.tree_map(jnp.zeros_like, deltas)
    (_, (logits, states)), (grads, grads_z) = nn.value_and_grad(
        lambda m, d, z: _seg_loss(m, cfg, d, z, states, xs, keeps), mdl, deltas, zs,
        has_aux=True)
    if hc.cms_first_order:
        grads, grads_z = jax.lax.stop_gradient((grads, grads_z))
    new_d, new_a, new_z, new_r = [], [], [], []
    for i, live in enumerate(dyn):
        if not live:
            for lst in (new_d, new_a, new_z, new_r):
                lst.append(None)
            continue
        at = ((c + 1) * s) % hc.cms_periods[i] == 0
        # the layer axis leads the deltas; the reset flag is per sequence (shared by layers)
        out = jax.vmap(cms.boundary_update, (0, 0, 0, None, 0, 0, None, None, None),
                       (0, 0, 0, None))(deltas[i], accs[i], acc_zs[i], resets[i], grads[i],
                                        grads_z[i], xs["starts"], at, hc.cms_lr)
        for lst, v in zip((new_d, new_a, new_z, new_r), out):
            lst.append(v)
    if hc.cms_variant == "nested":
        new_d = nested_reinit(new_d, (c + 1) * s, hc.cms_periods)
    new_d, new_a, new_z = (constrain_levels(tuple(v)) for v in (new_d, new_a, new_z))
    return (states, new_d, new_a, new_z, tuple(new_r), c + 1), logits


def ntp_forward(body: nn.Module, cfg: ModelConfig, tokens_BT, positions_BT, segment_ids_BT):
    """Logits [B, T, V] of the LM run segment by segment with `ntp` CMS updates (module doc).

    `body` is the LM body (`LM(cfg, name="ntp")`), called on one segment with a carry."""
    b, t = tokens_BT.shape
    s = ntp_segment(cfg, t)
    if t % s:
        raise ValueError(f"sequence length {t} must be a multiple of the fastest CMS period {s}")
    n = t // s
    seg_xs = ntp_inputs(cfg, tokens_BT, positions_BT, segment_ids_BT)
    seg_xs = jax.tree_util.tree_map(lambda a: jnp.moveaxis(a.reshape(b, n, s), 1, 0), seg_xs)

    def step(mdl, carry, xs):
        return ntp_step(mdl, cfg, t, carry, xs)

    first = jax.tree_util.tree_map(lambda a: a[0], seg_xs)
    carry, logits0 = step(body, ntp_init(cfg, b, t), first)
    if n == 1:
        return logits0
    rest = jax.tree_util.tree_map(lambda a: a[1:], seg_xs)
    logits = _scan_segments(step, body, carry, rest, n - 1, cfg.hope.ntp_remat_group)
    logits_NBSV = jnp.concatenate([logits0[None], logits], axis=0)
    return jnp.moveaxis(logits_NBSV, 0, 1).reshape(b, t, -1)


def _scan_segments(step, body, carry, xs, n: int, group: int):
    """Logits [n, B, S, V] of `n` segments scanned with `step`. With `group` > 1, each group of
    `group` segments is one rematerialised scan step (`nn.remat`: the backward pass stores only
    the carry at group starts and recomputes inside a group, the `scan_remat_chunk` pattern of
    TTT-E2E); a remainder of fewer segments is scanned plainly after. Exact: the same function."""
    def plain(carry, xs, length):
        scan = nn.scan(step, variable_broadcast="params", split_rngs={"params": False},
                       length=length)
        return scan(body, carry, xs)

    if group <= 1 or n < group:
        return plain(carry, xs, n)[1]
    k = n // group

    def run_group(mdl, carry, xs_g):  # xs_g leaves [group, B, S]
        out = []
        for j in range(group):
            carry, lg = step(mdl, carry, jax.tree_util.tree_map(lambda a, j=j: a[j], xs_g))
            out.append(lg)
        return carry, jnp.stack(out)

    grouped = jax.tree_util.tree_map(
        lambda a: a[:k * group].reshape((k, group) + a.shape[1:]), xs)
    scan = nn.scan(nn.remat(run_group, prevent_cse=False), variable_broadcast="params",
                   split_rngs={"params": False}, length=k)
    carry, logits = scan(body, carry, grouped)
    logits = logits.reshape((k * group,) + logits.shape[2:])
    if n == k * group:
        return logits
    tail = jax.tree_util.tree_map(lambda a: a[k * group:], xs)
    return jnp.concatenate([logits, plain(carry, tail, n - k * group)[1]], axis=0)
