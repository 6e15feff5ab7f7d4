"""One rule, two levels (SPEC §1): the optax (outer) and in-context (inner) uses of a rule agree;
optimizer state round-trips through an orbax checkpoint."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from hope_jax.config import OptimConfig
from hope_jax.optim import (
    build_optimizer,
    delta_momentum,
    delta_momentum_rule,
    dmgd,
    dmgd_rule,
    m3,
    m3_rule,
    momentum_rule,
    muon_rule,
    ns_momentum,
    precond_momentum,
    precond_momentum_rule,
    sgd_momentum,
)

K, V, T = 4, 3, 8
# (rule, optax factory, static args, gates the rule reads per token)
CASES = {
    "momentum": (momentum_rule(), sgd_momentum, (), ("lr", "momentum")),
    "precond": (precond_momentum_rule(), precond_momentum, (), ("lr", "momentum")),
    "delta": (delta_momentum_rule(), delta_momentum, (), ("lr", "momentum")),
    "dmgd": (dmgd_rule(hidden=4), dmgd, ("hidden",), ("lr", "momentum")),
    "dmgd_paper": (dmgd_rule(hidden=4, form="paper"), dmgd, ("hidden", "form"),
                   ("lr", "momentum")),
    "delta_paper": (delta_momentum_rule(form="paper"), delta_momentum, ("form",),
                    ("lr", "momentum")),
    "muon": (muon_rule(), ns_momentum, ("ns_steps",), ("lr", "momentum")),
    "m3": (m3_rule(period=3), m3, ("period", "ns_steps"), ("lr",)),
}
STATIC = {"dmgd": {"hidden": 4}, "dmgd_paper": {"hidden": 4, "form": "paper"},
          "delta_paper": {"form": "paper"}, "m3": {"period": 3}}


def _tokens():
    t = jnp.arange(T, dtype=jnp.float32)[:, None]
    k = jnp.sin(t * 1.3 + jnp.arange(K)[None, :] * 0.7)
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    v = jnp.cos(t * 0.9 + jnp.arange(V)[None, :] * 1.1)
    gates = {"lr": 0.05 + 0.02 * jnp.sin(t[:, 0]), "momentum": 0.8 + 0.1 * jnp.cos(t[:, 0])}
    return k, v, gates


def _loss(w, k, v):  # linear fast-weight memory, L2 inner objective (SPEC Eq. 93 / Titans)
    return 0.5 * jnp.sum((k @ w - v) ** 2)


def _outer_level(name):
    """The optax transformation, one optimizer step per token, gates set as hyperparameters."""
    _, factory, static, used = CASES[name]
    k, v, gates = _tokens()
    tx = optax.inject_hyperparams(factory, static_args=static)(
        learning_rate=0.1, **({"momentum": 0.9} if "momentum" in used else {}),
        **STATIC.get(name, {}))
    w = jnp.zeros((K, V))
    state = tx.init(w)
    update = jax.jit(tx.update)
    ws = []
    for t in range(T):
        state.hyperparams["learning_rate"] = gates["lr"][t]
        if "momentum" in used:
            state.hyperparams["momentum"] = gates["momentum"][t]
        u, state = update(jax.grad(_loss)(w, k[t], v[t]), state, w)
        w = w + u
        ws.append(w)
    return jnp.stack(ws)


def _inner_level(name):
    """The same rule inside a lax.scan over tokens: a fast weight updated in context."""
    rule, _, _, used = CASES[name]
    k, v, gates = _tokens()

    def tok(carry, xs):
        w, s = carry
        k_t, v_t, g_t = xs
        u, s = rule.step(jax.grad(_loss)(w, k_t, v_t), s, {n: g_t[n] for n in used})
        return (w + u, s), w + u

    w0 = jnp.zeros((K, V))
    _, ws = jax.lax.scan(tok, (w0, rule.init(w0)), (k, v, gates))
    return ws


@pytest.mark.parametrize("name", sorted(CASES))
def test_one_rule_two_levels_scan(name):
    np.testing.assert_allclose(_inner_level(name), _outer_level(name), rtol=1e-5, atol=1e-6)


def test_one_rule_two_levels_through_engine_hook():
    """The rule plugged into hope_jax.memory's InnerOptimizer hook (memory_scan, chunk 1) gives
    the outer trajectory; as the Titans inner optimizer it equals the engine's own closed form."""
    scan = pytest.importorskip("hope_jax.memory.scan")
    mem_opt = pytest.importorskip("hope_jax.memory.optimizers")
    rules = pytest.importorskip("hope_jax.memory.rules")
    from hope_jax.optim.inner import as_inner_optimizer

    k, v, gates = _tokens()
    arch = rules.make_arch("linear", K, V)
    as_bht = lambda x: x[None, None]
    w0 = jnp.zeros((1, K, V))  # one head
    for name in ("momentum", "delta", "dmgd"):
        spec = scan.MemorySpec(arch, rules.l2, as_inner_optimizer(CASES[name][0]), chunk_size=1)
        _, st = scan.memory_scan(spec, (w0,), as_bht(k), as_bht(k), as_bht(v),
                                 {n: as_bht(g) for n, g in gates.items()})
        np.testing.assert_allclose(st.params[0][0, 0], _outer_level(name)[-1], rtol=1e-5,
                                   atol=1e-6)
    # chunk 4, with a retention gate: our momentum rule == Titans Eqs. 13-14 (closed-form path)
    gates = {**gates, "retain": 0.97 - 0.01 * jnp.arange(T, dtype=jnp.float32)}
    gates_bht = {n: as_bht(g) for n, g in gates.items()}
    finals = []
    for opt in (as_inner_optimizer(momentum_rule()), mem_opt.titans(momentum=True, decay=True)):
        spec = scan.MemorySpec(arch, rules.l2, opt, chunk_size=4)
        y, st = scan.memory_scan(spec, (w0,), as_bht(k), as_bht(k), as_bht(v), gates_bht)
        finals.append((y, st.params[0]))
    np.testing.assert_allclose(finals[0][0], finals[1][0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(finals[0][1], finals[1][1], rtol=1e-5, atol=1e-6)


# one optimizer per distinct state type: optax partition + masked AdamW + rule state (delta:
# PrecondState; dmgd: shared MLP; dmgd paper form: one MLP per leaf, built from the config switch;
# m3_ema: lax.cond slow memory), optax.contrib.muon's MuonState
ROUNDTRIP = {"delta_momentum": {}, "dmgd": {}, "dmgd_paper": {"name": "dmgd", "dmgd_form": "paper"},
             "m3_ema": {}, "muon": {}}


def test_state_roundtrips_through_orbax(tmp_path):
    """Save optimizer states, restore into their abstract trees, continue identically."""
    params = {"w": jnp.cos(jnp.arange(2 * 4 * 3.0)).reshape(2, 4, 3),
              "b": jnp.ones((3,)), "e": jnp.sin(jnp.arange(15.0)).reshape(5, 3)}
    groups = {"w": "matrix", "b": "vector", "e": "embedding"}
    grads = jax.tree.map(lambda x: jnp.sin(3.0 * x) + 0.1, params)
    updates, states = {}, {}
    for name in ROUNDTRIP:
        cfg = OptimConfig(**{"name": name, "warmup_steps": 1, "m3_period": 2,
                             **ROUNDTRIP[name]})
        tx = build_optimizer(cfg, 20, groups)
        updates[name] = jax.jit(tx.update)
        state = tx.init(params)
        for _ in range(3):  # past m3's first slow-memory boundary
            _, state = updates[name](grads, state, params)
        states[name] = state
    ckptr = ocp.StandardCheckpointer()  # one checkpoint holding every optimizer's state
    ckptr.save(tmp_path / "opt", states)
    ckptr.wait_until_finished()
    restored = ckptr.restore(tmp_path / "opt",
                             jax.tree.map(ocp.utils.to_shape_dtype_struct, states))
    for name, state in states.items():
        assert jax.tree.structure(restored[name]) == jax.tree.structure(state), name
        u1, _ = updates[name](grads, state, params)
        u2, _ = updates[name](grads, restored[name], params)
        for a, b in zip(jax.tree.leaves(u1), jax.tree.leaves(u2)):
            np.testing.assert_array_equal(a, b, err_msg=name)
