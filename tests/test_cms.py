"""Continuum Memory System: update schedules, the `ntp` signal against a hand-computed step,
the `local` signal against a naive loop, and gradients through the inner updates (float64)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hope_jax.memory import cms
from hope_jax.models.lm import LM
from tests.helpers import tiny_config

S = 8  # fastest CMS period in these tests


@pytest.fixture(autouse=True)
def _x64():
    jax.config.update("jax_enable_x64", True)
    yield
    jax.config.update("jax_enable_x64", False)


def _cfg(periods, **kw):
    base = {"model.name": "hope_attention", "model.d_model": 32, "model.num_heads": 2,
            "model.num_layers": 2, "model.param_dtype": "float64", "model.dtype": "float64",
            "model.hope.cms_periods": periods, "model.hope.cms_lr": 0.5, "data.seq_len": 4 * S,
            "model.inner.chunk_size": 4}
    base.update(kw)
    return tiny_config(**base)


def _tokens(b=1, t=4 * S, seed=0):
    return jax.random.randint(jax.random.key(seed), (b, t), 0, 257)


def _init(cfg, x):
    return nn.unbox(jax.jit(LM(cfg.model).init)(jax.random.key(1), x))["params"]


def _stack_params(p_ntp):
    """ntp-mode params live under 'ntp' with the stack-mode names inside."""
    return p_ntp["ntp"]


def test_zero_lr_equals_static_stack():
    """The ntp machinery with eta = 0 is exactly the static CMS (all levels plain FFNs)."""
    x = _tokens(b=2)
    cfg = _cfg((S, 2 * S, 0), **{"model.hope.cms_lr": 0.0})
    p = _init(cfg, x)
    a = LM(cfg.model).apply({"params": p}, x)
    static = _cfg((0, 0, 0))
    b = LM(static.model).apply({"params": _stack_params(p)}, x)
    np.testing.assert_allclose(a, b, atol=1e-10)


def _nll_sum(logits, x, lo, hi):
    lp = jax.nn.log_softmax(logits[:, lo:hi], -1)
    return -jnp.sum(jnp.take_along_axis(lp, x[:, lo + 1:hi + 1, None], -1))


def test_ntp_update_equals_hand_computed_gradient_step():
    """Segment 2 of the ntp model == static model whose level-0 W0 took one GD step on the NLL
    of segment 1 (targets include the first token of segment 2), lr = cms_lr (SPEC Eq. 71).

    One layer: segment 2 then attends to keys of segment 1 that do not depend on CMS weights, as
    in the static reference (deeper, the cached keys of past tokens keep their old weights)."""
    x = _tokens(t=2 * S)
    cfg = _cfg((S, 0, 0), **{"data.seq_len": 2 * S, "model.num_layers": 1})
    p = _init(cfg, x)
    logits = LM(cfg.model).apply({"params": p}, x)
    static = _cfg((0, 0, 0), **{"data.seq_len": 2 * S, "model.num_layers": 1})
    stack = LM(static.model)
    ps = _stack_params(p)

    def seg1_loss(w0):
        q = jax.tree_util.tree_map(lambda a: a, ps)
        q["blocks"]["block"]["cms_0"] = {**ps["blocks"]["block"]["cms_0"], **w0}
        return _nll_sum(stack.apply({"params": q}, x), x, 0, S)

    w0 = {k: ps["blocks"]["block"]["cms_0"][k] for k in cms.LEVEL_KEYS}
    g = jax.grad(seg1_loss)(w0)
    stepped = jax.tree_util.tree_map(lambda w, gw: w - 0.5 * gw, w0, g)
    q = jax.tree_util.tree_map(lambda a: a, ps)
    q["blocks"]["block"]["cms_0"] = {**ps["blocks"]["block"]["cms_0"], **stepped}
    ref = stack.apply({"params": q}, x)
    np.testing.assert_allclose(logits[:, :S], stack.apply({"params": ps}, x)[:, :S], atol=1e-10)
    np.testing.assert_allclose(logits[:, S:], ref[:, S:], atol=1e-9)
    assert not np.allclose(logits[:, S:], stack.apply({"params": ps}, x)[:, S:], atol=1e-6)


def test_level_changes_only_at_multiples_of_its_period():
    """Period 2S: segments 1-2 see W0; segment 3 (after the first boundary) sees an update."""
    x = _tokens(t=4 * S)
    cfg = _cfg((S, 2 * S, 0), **{"model.hope.cms_lr": 0.0})
    p = _init(cfg, x)
    base = LM(cfg.model).apply({"params": p}, x)
    slow = _cfg((2 * S, 0, 0))  # only a period-2S level learns, lr 0.5
    out = LM(slow.model).apply({"params": p}, x)
    np.testing.assert_allclose(out[:, :2 * S], base[:, :2 * S], atol=1e-10)
    assert not np.allclose(out[:, 2 * S:], base[:, 2 * S:], atol=1e-6)


def test_document_start_resets_fast_weights():
    """No information crosses a document boundary: the 2nd document of a packed row does not
    depend on the 1st (mid-segment start, windows of two periods); with windows aligned to the
    document it equals that document alone."""
    x = _tokens(t=4 * S)
    cut = S + 3
    seg = jnp.concatenate([jnp.ones((1, cut), jnp.int32),
                           2 * jnp.ones((1, 4 * S - cut), jnp.int32)], 1)
    pos = jnp.concatenate([jnp.arange(cut), jnp.arange(4 * S - cut)])[None]
    cfg = _cfg((S, 2 * S, 0))
    p = _init(cfg, x)
    model = LM(cfg.model)
    a = model.apply({"params": p}, x, pos, seg)
    y = x.at[:, :cut].set((x[:, :cut] + 11) % 257)
    b = model.apply({"params": p}, y, pos, seg)
    np.testing.assert_allclose(a[:, cut:], b[:, cut:], atol=1e-10)
    assert not np.allclose(a[:, :cut], b[:, :cut])
    # document starting on a segment boundary, one dynamic level of period S: == alone
    cfg1 = _cfg((S, 0, 0))
    seg1 = jnp.concatenate([jnp.ones((1, S), jnp.int32), 2 * jnp.ones((1, 3 * S), jnp.int32)], 1)
    pos1 = jnp.concatenate([jnp.arange(S), jnp.arange(3 * S)])[None]
    p1 = _init(cfg1, x)
    packed = LM(cfg1.model).apply({"params": p1}, x, pos1, seg1)
    alone = LM(_cfg((S, 0, 0), **{"data.seq_len": 3 * S}).model).apply({"params": p1}, x[:, S:])
    np.testing.assert_allclose(packed[:, S:], alone, atol=1e-9)


@pytest.mark.parametrize("variant", ["nested", "independent"])
def test_variants_change_the_computation(variant):
    x = _tokens(b=2)
    cfg = _cfg((S, 2 * S, 0))
    other = _cfg((S, 2 * S, 0), **{"model.hope.cms_variant": variant})
    p0 = _init(cfg, x)
    p1 = _init(other, x)
    a = LM(cfg.model).apply({"params": p0}, x)
    b = LM(other.model).apply({"params": p1}, x)
    assert a.shape == b.shape and not np.allclose(a, b)
    if variant == "nested":  # same params: only the re-init differs, from the first slow boundary
        np.testing.assert_allclose(a[:, :2 * S], b[:, :2 * S], atol=1e-10)


def test_local_level_equals_naive_loop():
    """`local` signal: window c uses W0 + Delta_c; Delta_{c+1} = Delta_c - lr * grad (naive)."""
    d, f, t, period, lr = 8, 12, 24, 6, 0.3
    k = jax.random.split(jax.random.key(0), 5)
    p = {"scale": 1.0 + 0.1 * jax.random.normal(k[0], (d,)),
         "gate": 0.3 * jax.random.normal(k[1], (d, f)),
         "up": 0.3 * jax.random.normal(k[2], (d, f)),
         "down": 0.3 * jax.random.normal(k[3], (f, d))}
    h = jax.random.normal(k[4], (2, t, d))
    seg = jnp.ones((2, t), jnp.int32)
    pos = jnp.broadcast_to(jnp.arange(t), (2, t))
    out = cms.local_level(p, h, seg, pos, period, lr)
    for b in range(2):
        w = {n: p[n] for n in cms.LEVEL_KEYS}
        for c in range(t // period):
            hc = h[b:b + 1, c * period:(c + 1) * period]
            ref = cms.level_forward({**p, **w}, hc)
            np.testing.assert_allclose(out[b:b + 1, c * period:(c + 1) * period], ref, atol=1e-10)
            ok = jnp.ones((1, period)).at[0, -1].set(0.0)
            g = jax.grad(lambda w, hc=hc, ok=ok: cms.local_loss(p, w, hc, ok))(w)
            w = jax.tree_util.tree_map(lambda a, gg: a - lr * gg, w, g)


def test_outer_gradient_through_inner_updates_matches_finite_differences():
    x = _tokens(t=2 * S)
    cfg = _cfg((S, 0, 0), **{"data.seq_len": 2 * S, "model.num_layers": 1})
    model = LM(cfg.model)
    p = _init(cfg, x)

    def loss(p):
        return _nll_sum(model.apply({"params": p}, x), x, S, 2 * S - 1)

    g = jax.grad(loss)(p)
    direction = jax.tree_util.tree_map(
        lambda a: jax.random.normal(jax.random.key(a.size), a.shape), p)
    eps = 1e-5
    plus = loss(jax.tree_util.tree_map(lambda a, d: a + eps * d, p, direction))
    minus = loss(jax.tree_util.tree_map(lambda a, d: a - eps * d, p, direction))
    fd = (plus - minus) / (2 * eps)
    an = sum(jnp.sum(a * d) for a, d in zip(jax.tree.leaves(g), jax.tree.leaves(direction)))
    np.testing.assert_allclose(an, fd, rtol=1e-5)
    # first-order switch: the inner gradient is a constant, so the outer gradient differs
    fo = LM(_cfg((S, 0, 0), **{"data.seq_len": 2 * S, "model.num_layers": 1,
                               "model.hope.cms_first_order": True}).model)
    g_fo = jax.grad(lambda p: _nll_sum(fo.apply({"params": p}, x), x, S, 2 * S - 1))(p)
    assert not all(np.allclose(a, b) for a, b in zip(jax.tree.leaves(g), jax.tree.leaves(g_fo)))


def test_outer_signal_updates_levels_every_period_steps():
    params = {"blocks": {"block": {"cms_0": {"up": jnp.ones((2, 3))},
                                   "cms_1": {"up": jnp.ones((2, 3))}}},
              "embed": {"embedding": jnp.ones((4, 3))}}
    tx = cms.wrap_outer_levels(optax.sgd(0.1), params, (1, 3), "outer")
    state = tx.init(params)
    grads = jax.tree_util.tree_map(jnp.ones_like, params)
    history = []
    for _ in range(6):
        upd, state = tx.update(grads, state, params)
        params = optax.apply_updates(params, upd)
        history.append(float(params["blocks"]["block"]["cms_1"]["up"][0, 0]))
    np.testing.assert_allclose(history, [1, 1, 0.9, 0.9, 0.9, 0.8], atol=1e-6)
    assert float(params["embed"]["embedding"][0, 0]) == pytest.approx(1 - 6 * 0.1)
    assert float(params["blocks"]["block"]["cms_0"]["up"][0, 0]) == pytest.approx(1 - 6 * 0.1)


def _ntp_grad(group, x, **kw):
    """jit(value_and_grad) of the summed NLL of a 1-layer ntp model with segment remat `group`,
    and its params."""
    cfg = _cfg((S, 2 * S, 0), **{"data.seq_len": x.shape[1], "model.num_layers": 1,
                                 "model.hope.ntp_remat_group": group, **kw})
    model = LM(cfg.model)

    def loss(p):
        logits = model.apply({"params": p}, x)
        return jnp.sum(optax.softmax_cross_entropy_with_integer_labels(
            logits[:, :-1], x[:, 1:])), logits

    return jax.jit(jax.value_and_grad(loss, has_aux=True)), _init(cfg, x)


def test_segment_remat_is_exact(group=2):  # 5 segments after the first: 2 groups of 2 + 1
    """`hope.ntp_remat_group`: rematerialised groups of segments (with a remainder) give the
    same logits and outer gradients as storing every segment (float64, 6 segments)."""
    x = _tokens(b=2, t=6 * S)
    f0, p = _ntp_grad(0, x)
    (_, ref_logits), ref_grads = f0(p)
    (_, logits), grads = _ntp_grad(group, x)[0](p)
    np.testing.assert_allclose(logits, ref_logits, rtol=1e-11, atol=1e-11)
    for a, b in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-11)


def test_segment_remat_cuts_the_stored_activations():
    """The compiled backward pass stores fewer per-segment copies with groups: XLA's temporaries
    of 16 segments drop by more than a third with groups of 4 (fails if the remat is lost)."""
    x = _tokens(b=1, t=16 * S)
    temps = {}
    for g in (0, 4):
        f, p = _ntp_grad(g, x, **{"model.dtype": "float32", "model.param_dtype": "float32"})
        temps[g] = f.lower(p).compile().memory_analysis().temp_size_in_bytes
    assert temps[4] < 0.67 * temps[0], temps
