"""The paper's baselines as engine configurations (SPEC §1, §5): each equals its paper's recurrence.

For every baseline, float64, against a token-by-token loop written from the model's own paper
(column conventions and update orders as printed there, not the engine's):
  * the generic-engine configuration (`memory/baselines.engine_spec`) == the recurrence;
  * the fast chunked form (`memory/delta_chunk`, UT transform) == the recurrence, several chunks;
  * causality and segment carry (two calls with the carried state == one pass), with documents;
  * the fast delta-rule form == the generic engine (outputs, states and outer gradients).
Model-level checks (every registered model, causality / batch isolation) live in test_model.py;
the per-model document-isolation checks and the paper-scale parameter counts are marked slow.
"""

import importlib.util
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hope_jax.config import validate
from hope_jax.memory.baselines import BASELINES, engine_spec, linear_memory
from hope_jax.memory.scan import memory_scan
from hope_jax.models.lm import LM

ROOT = pathlib.Path(__file__).resolve().parents[1]
B, H, T, K, V = 2, 2, 16, 4, 3
# row 0: documents [0, 5), [5, 12), [12, 16) (mid-chunk for C = 4); row 1: one document
SEG = np.array([[0] * 5 + [1] * 7 + [2] * 4, [3] * 16])
LINEAR = ["linear_attention", "retnet", "mamba2", "deltanet", "gated_deltanet"]


pytestmark = pytest.mark.usefixtures("float64")  # conftest.py


def _inputs(seed=0):
    ks = jax.random.split(jax.random.PRNGKey(seed), 5)
    n = lambda i, shape: np.asarray(jax.random.normal(ks[i], shape, jnp.float64))
    k = n(1, (B, H, T, K))
    k = k / np.linalg.norm(k, axis=-1, keepdims=True)  # delta rules use L2-normalised keys
    beta = 1 / (1 + np.exp(-n(3, (B, H, T))))
    log_a = -np.log1p(np.exp(n(4, (B, H, T))))  # log of a retention in (0, 1)
    return n(0, (B, H, T, K)), k, n(2, (B, H, T, V)), beta, log_a


def textbook(name, q, k, v, beta, log_a, seg=None):
    """Each model's recurrence as its paper writes it, one token at a time (zero state, reset at
    document starts). Returns outputs [B, H, T, V]."""
    out = np.zeros(v.shape)
    gamma = 1 - 2.0 ** (-5.0 - np.arange(H))  # RetNet's fixed per-head decays
    for b in range(B):
        for h in range(H):
            for t in range(T):
                if t == 0 or (seg is not None and seg[b, t] != seg[b, t - 1]):
                    s_vk, s_kv = np.zeros((V, K)), np.zeros((K, V))
                qt, kt, vt = q[b, h, t], k[b, h, t], v[b, h, t]
                bt, at = beta[b, h, t], np.exp(log_a[b, h, t])
                if name == "linear_attention":  # S_t = S_{t-1} + v_t k_t^T, o_t = S_t q_t
                    s_vk = s_vk + np.outer(vt, kt)
                elif name == "retnet":  # s_n = gamma s_{n-1} + K_n^T V_n, o_n = Q_n s_n
                    s_kv = gamma[h] * s_kv + np.outer(kt, vt)
                elif name == "mamba2":  # h_t = exp(dt A) h_{t-1} + dt x_t B_t^T, y_t = h_t C_t
                    s_vk = at * s_vk + bt * np.outer(vt, kt)
                elif name == "deltanet":  # retrieve v_old = S k, write beta (v - v_old) k^T
                    s_vk = s_vk + bt * np.outer(vt - s_vk @ kt, kt)
                elif name == "gated_deltanet":  # S_t = S_{t-1} a_t (I - b_t k k^T) + b_t v k^T
                    s_vk = s_vk @ (at * (np.eye(K) - bt * np.outer(kt, kt))) + bt * np.outer(vt, kt)
                out[b, h, t] = qt @ s_kv if name == "retnet" else s_vk @ qt
    return out


def _gates(name, beta, log_a):
    """The layer-side gates of each model: write strength b_t and log retention log a_t."""
    if name in ("linear_attention", "retnet"):
        beta = np.ones_like(beta)
    if name == "retnet":
        log_a = np.broadcast_to(np.log1p(-(2.0 ** (-5.0 - np.arange(H))))[None, :, None],
                                beta.shape)
    return beta, (None if BASELINES[name].retention == "none" else log_a)


# tiny shapes: compile time dominates, so skip LLVM's optimisations (as test_self_modifying)
_FAST_COMPILE = {"xla_backend_optimization_level": 0, "xla_llvm_disable_expensive_passes": True}


def _jit(f, **kw):
    return jax.jit(f, compiler_options=_FAST_COMPILE, **kw)


_run = _jit(linear_memory, static_argnums=0, static_argnames=("impl", "chunk_size"))


def _close(a, b, tol=1e-10):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


@pytest.mark.parametrize("name", LINEAR)
def test_engine_and_fast_forms_equal_the_papers_recurrence(name):
    """Generic engine (dot: chunk 4; delta: chunk 1) and fast form (chunks 4, 16) == textbook."""
    q, k, v, beta, log_a = _inputs()
    lr, la = _gates(name, beta, log_a)
    want = textbook(name, q, k, v, beta, log_a, SEG)
    bl = BASELINES[name]
    for impl, c in (("engine", 4), ("fast", 4), ("fast", 16)):
        y, _ = _run(bl, q, k, v, lr, la, impl=impl, chunk_size=c, segment_ids_BT=SEG)
        _close(y, want)


@pytest.mark.parametrize("name", LINEAR)
def test_causal_and_segment_carry(name):
    """Outputs before t ignore inputs after t; two calls carrying the state == one call, for both
    forms, and a state from the fast form continues in the engine (same state type)."""
    q, k, v, beta, log_a = _inputs(1)
    lr, la = _gates(name, beta, log_a)
    bl = BASELINES[name]
    y, s = _run(bl, q, k, v, lr, la, impl="fast", chunk_size=4, segment_ids_BT=SEG)
    t = 9
    pert = [x.copy() for x in (q, k, v)]
    for x in pert:
        x[:, :, t:] += 1.0
    y2, _ = _run(bl, *pert, lr, la, impl="fast", chunk_size=4, segment_ids_BT=SEG)
    _close(y2[:, :, :t], y[:, :, :t], tol=0.0)
    assert not np.allclose(y2[:, :, t:], y[:, :, t:])
    sl = lambda x, a, b_: None if x is None else x[:, :, a:b_]
    for first, second in (("fast", "fast"), ("fast", "engine")):
        parts = []
        state = None
        for (a, b_), impl in zip(((0, 8), (8, 16)), (first, second)):
            yp, state = _run(bl, sl(q, a, b_), sl(k, a, b_), sl(v, a, b_), sl(lr, a, b_),
                             sl(la, a, b_), impl=impl, chunk_size=4, segment_ids_BT=SEG[:, a:b_],
                             state=state)
            parts.append(yp)
        _close(jnp.concatenate(parts, axis=2), y)
        _close(state.params, s.params)


@pytest.mark.parametrize("name", ["gated_deltanet"])
def test_fast_delta_rule_matches_generic_engine_with_gradients(name):
    """UT-transform chunks (C = 8) == the engine at chunk 1: outputs, final state, and the outer
    gradient w.r.t. q, k, v and both gates (the form is differentiable and exact)."""
    q, k, v, beta, log_a = _inputs(2)
    bl = BASELINES[name]
    la = log_a if bl.retention == "data" else None

    def loss(impl, q, k, v, beta, la):
        y, s = linear_memory(bl, q, k, v, beta, la, impl=impl, chunk_size=8, segment_ids_BT=SEG)
        return jnp.sum(jnp.sin(y)) + jnp.sum(s.params[0] ** 2)

    args = (q, k, v, beta, la)
    argnums = (0, 1, 2, 3, 4) if la is not None else (0, 1, 2, 3)
    fast = _jit(jax.value_and_grad(lambda *a: loss("fast", *a), argnums))(*args)
    slow = _jit(jax.value_and_grad(lambda *a: loss("engine", *a), argnums))(*args)
    _close(fast, slow, tol=1e-9)


def test_fast_delta_rule_is_stable_in_float32_with_correlated_keys():
    """Chunk 64, fp32, nearly parallel keys (the UT system's worst case): still within 1e-4 of the
    float64 result (the power-series inverse of I + A, tried first, overflowed here)."""
    ks = jax.random.split(jax.random.PRNGKey(5), 4)
    shape = (1, 1, 128, 16)
    k = jax.random.normal(ks[0], shape) + 2.0 * jax.random.normal(ks[1], (1, 1, 1, 16))
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    q, v = jax.random.normal(ks[2], shape), jax.random.normal(ks[3], shape)
    gates = {"lr": jnp.full(shape[:3], 0.9), "log_retain": jnp.full(shape[:3], -0.01)}
    bl = BASELINES["gated_deltanet"]
    want, _ = _run(bl, q, k, v, gates["lr"], gates["log_retain"], impl="fast", chunk_size=64)
    f32 = lambda x: jnp.asarray(x, jnp.float32)
    got, _ = _run(bl, f32(q), f32(k), f32(v), f32(gates["lr"]), f32(gates["log_retain"]),
                  impl="fast", chunk_size=64)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, atol=1e-4 * float(jnp.abs(want).max()))


@pytest.mark.parametrize("delta", [True, False], ids=["delta", "hebbian"])
def test_decay_flush_is_invisible_at_the_state_precision(delta):
    """PAPER.md D15: flushing decay factors below eps^2 to 0 (the default; without it a fast
    decay over a 64-token chunk leaves factors exp(-87 ... -103), subnormal in fp32) changes the
    fp32 outputs and gradients by less than fp32 rounding: both are as close to float64 as each
    other, and to each other within 1e-6 relative."""
    from hope_jax.memory.delta_chunk import chunk_linear_memory

    ks = jax.random.split(jax.random.PRNGKey(11), 5)
    shape = (1, 2, 128, 8)
    unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    q, k = unit(jax.random.normal(ks[0], shape)), unit(jax.random.normal(ks[1], shape))
    v = jax.random.normal(ks[2], shape)
    lr = jax.nn.sigmoid(jax.random.normal(ks[3], shape[:3]))
    la = -jax.random.uniform(ks[4], shape[:3], minval=0.5, maxval=3.0)  # log a_t: fast decay

    def run(dtype, flush):
        f = lambda q, k, v: jnp.sum(jnp.sin(chunk_linear_memory(
            q, k, v, {"lr": lr.astype(dtype), "log_retain": la.astype(dtype)}, delta=delta,
            chunk_size=64, flush=flush)[0]))
        args = tuple(x.astype(dtype) for x in (q, k, v))
        return jax.tree_util.tree_map(np.asarray, _jit(jax.value_and_grad(f, (0, 1, 2)))(*args))

    ref = run(jnp.float64, False)
    on, off = run(jnp.float32, True), run(jnp.float32, False)
    for a, b, r in zip(jax.tree_util.tree_leaves(on), jax.tree_util.tree_leaves(off),
                       jax.tree_util.tree_leaves(ref)):
        scale = float(np.abs(r).max())
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-6 * scale)
        np.testing.assert_allclose(a, r, rtol=0, atol=1e-5 * scale)


def _ttt_textbook(mlp, w0, q, k, v, lr, chunk):
    """TTT (Sun et al. 2024) with mini-batch GD, primal form: inside mini-batch b every token's
    gradient is taken at W_b; token t reads with W_b - sum_{s<=t} eta_s grad_s; f(x) = x +
    Norm(g(x)) with the parameter-free RMS norm, g linear or gelu-MLP."""

    def f(w, x):
        hdn = x @ w[0] if not mlp else jax.nn.gelu(x @ w[0]) @ w[1]
        return x + hdn * jax.lax.rsqrt(jnp.mean(hdn * hdn, -1, keepdims=True) + 1e-6)

    grad = _jit(jax.grad(lambda w, x, y: 0.5 * jnp.sum((f(w, x) - y) ** 2)))
    out = np.zeros(q.shape)
    for b in range(B):
        for h in range(H):
            w = tuple(np.asarray(x[h]) for x in w0)
            for start in range(0, T, chunk):
                acc = [np.zeros_like(x) for x in w]
                for t in range(start, start + chunk):
                    g = grad(w, k[b, h, t], v[b, h, t])
                    acc = [a + lr[b, h, t] * np.asarray(gi) for a, gi in zip(acc, g)]
                    wt = tuple(x - a for x, a in zip(w, acc))
                    out[b, h, t] = np.asarray(f(wt, q[b, h, t]))
                w = wt
    return out


@pytest.mark.parametrize("name", ["ttt_linear", "ttt_mlp"])
def test_ttt_engine_config_equals_minibatch_gd(name):
    """TTT-Linear / TTT-MLP = engine with the L2 objective, mini-batch GD (chunk 4) read-after-
    write; also causal and carried across segments."""
    q, k, _, beta, _ = _inputs(3)
    v = np.asarray(jax.random.normal(jax.random.PRNGKey(7), (B, H, T, K), jnp.float64))
    bl = BASELINES[name]
    spec = engine_spec(bl, K, K, chunk_size=4, hidden_mult=2.0)
    keys = jax.random.split(jax.random.PRNGKey(4), H)
    w0 = jax.vmap(lambda kk: spec.arch.init(kk, jnp.float64))(keys)
    lr = 0.5 * beta
    run = _jit(memory_scan, static_argnums=0)
    y, s = run(spec, w0, q, k, v, {"lr": lr})
    _close(y, _ttt_textbook(name == "ttt_mlp", w0, q, k, v, lr, 4), tol=1e-9)
    y1, s1 = run(spec, w0, q[:, :, :8], k[:, :, :8], v[:, :, :8], {"lr": lr[:, :, :8]})
    y2, s2 = run(spec, w0, q[:, :, 8:], k[:, :, 8:], v[:, :, 8:], {"lr": lr[:, :, 8:]}, state=s1)
    _close(jnp.concatenate([y1, y2], axis=2), y)
    _close(s2.params, s.params)


# ------------------------------------------------------------------------------------------------
# Models (full LM): document isolation per model (slow), engine == fast at model level
# ------------------------------------------------------------------------------------------------

MODEL_NAMES = LINEAR + ["ttt_linear", "ttt_mlp", "samba"]


def _cfg(name, **kw):
    model = {"name": name, "vocab_size": 31, "d_model": 16, "num_layers": 2, "num_heads": 2,
             "inner": {"chunk_size": 4}, "memory": {"window": 8}, "baseline": {"ssm_state": 8}} | kw
    return validate({"model": model}).model


def test_model_fast_form_equals_engine_form():
    """Gated DeltaNet LM, float64: impl=fast (UT chunks) and impl=engine give the same logits."""
    toks = (jnp.arange(2 * 22).reshape(2, 22) * 7) % 31  # 22: a padded tail chunk too
    seg = jnp.array([[1] * 10 + [2] * 12] * 2)
    kw = {"dtype": "float64", "param_dtype": "float64", "num_layers": 1}
    fast = LM(_cfg("gated_deltanet", **kw))
    slow = LM(_cfg("gated_deltanet", baseline={"impl": "engine", "ssm_state": 8}, **kw))
    params = _jit(fast.init)(jax.random.PRNGKey(0), toks)
    a = _jit(lambda p: fast.apply(p, toks, segment_ids_BT=seg))(params)
    b = _jit(lambda p: slow.apply(p, toks, segment_ids_BT=seg))(params)
    _close(a, b, tol=1e-9)


def _load(path):
    spec = importlib.util.spec_from_file_location("cfg", ROOT / path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return validate(mod.get_config())


SIZES = {"340m": 340e6, "760m": 760e6, "1_3b": 1.3e9}


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_paper_scale_param_counts(name):
    """configs/<name>_{340m,760m,1_3b}.py land within 5% of nominal (jax.eval_shape)."""
    for size, nominal in SIZES.items():
        cfg = _load(f"configs/{name}_{size}.py").model
        shapes = jax.eval_shape(
            lambda cfg=cfg: LM(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 64), jnp.int32)))
        n = sum(x.size for x in jax.tree_util.tree_leaves(shapes))
        assert abs(n / nominal - 1) < 0.05, (size, n)
