"""Chunk-parallel engine ≡ token-by-token reference (float64), carry, isolation, resets.

DESIGN §3 invariants 2, 3, 4 for the fast-weight engine (`hope_jax.memory.scan`).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from hope_jax.memory import optimizers, rules
from hope_jax.memory.reference import reference_scan
from hope_jax.memory.scan import MemorySpec, chunked_scan, memory_scan

pytestmark = pytest.mark.usefixtures("float64")  # conftest.py

B, H, T, K = 2, 2, 16, 4
# row 0: documents [0, 5), [5, 12), [12, 16) (boundaries mid-chunk for C = 4, 16); row 1: one doc
SEG = jnp.array([[0] * 5 + [1] * 7 + [2] * 4, [3] * 16])


def _inputs(seed=0, lr_max=0.5):
    ks = jax.random.split(jax.random.PRNGKey(seed), 6)
    n = lambda i, shape: jax.random.normal(ks[i], shape, jnp.float64)
    k = n(1, (B, H, T, K))
    k = k / jnp.linalg.norm(k, axis=-1, keepdims=True)
    gates = rules.squash_gates({"lr": n(3, (B, H, T)), "momentum": n(4, (B, H, T)),
                                "retain": n(5, (B, H, T)) - 2.0}, lr_max)
    return n(0, (B, H, T, K)), k, n(2, (B, H, T, K)), gates


def _init(arch, seed=1):
    keys = jax.random.split(jax.random.PRNGKey(seed), H)
    p = jax.vmap(lambda kk: arch.init(kk, jnp.float64))(keys)
    # a non-zero linear memory, so that retention and resets are visible
    return jax.tree_util.tree_map(lambda w: w + 0.3 * jax.random.normal(keys[0], w.shape), p)


def _arch(kind):
    """linear, mlp (residual), mlp_norm (residual + RMS-normalised output), mlp_gain (normalised
    output times a fast gain) or mlp_clip (per-token inner gradients clipped to norm 1)."""
    base = kind.split("_")[0]
    return rules.make_arch(base, K, K, depth=2, hidden_mult=2.0,
                           out_norm=kind.endswith(("_norm", "_gain")),
                           out_gain=kind.endswith("_gain"),
                           grad_clip=1.0 if kind.endswith("_clip") else 0.0)


def _close(a, b, tol=1e-10):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


def _both(spec, ip, q, k, v, g, **kw):
    run = jax.jit(memory_scan, static_argnums=0)
    ref = jax.jit(reference_scan, static_argnums=0)
    return run(spec, ip, q, k, v, g, **kw), ref(spec, ip, q, k, v, g, **kw)


# chunk 4: every (momentum/decay, objective) for the MLP, two for the linear memory; chunk 1 and
# 16 (one chunk = the whole sequence): both memories, both objectives, momentum + decay on.
_FULL = [(4, "mlp", md, obj) for md in (False, True) for obj in ("l2", "dot")]
_FULL += [(4, "linear", False, "l2"), (4, "linear", True, "dot")]
_EDGES = [(1, "linear", True, "l2"), (1, "mlp_norm", True, "dot"), (16, "linear", True, "dot"),
          (16, "mlp_norm", True, "l2")]


@pytest.mark.parametrize("chunk,kind,mom_decay,objective", _FULL + _EDGES)
def test_chunked_matches_reference(chunk, kind, mom_decay, objective):
    """Closed-form chunk update (with document resets) == per-token loop, every rule."""
    arch = _arch(kind)
    spec = MemorySpec(arch, rules.OBJECTIVES[objective],
                      optimizers.titans(momentum=mom_decay, decay=mom_decay), chunk)
    (y, s), (y_ref, s_ref) = _both(spec, _init(arch), *_inputs(), segment_ids_BT=SEG)
    _close(y, y_ref)
    _close(s, s_ref)


@pytest.mark.parametrize("momentum,decay,manual", [(True, False, True), (False, True, True),
                                                   (True, True, False)])
def test_momentum_or_decay_alone(momentum, decay, manual):
    """Each gate alone; and the closed form with `jax.vjp` per slot instead of the merged one."""
    arch = _arch("mlp_norm")
    spec = MemorySpec(arch, rules.l2, optimizers.titans(momentum, decay), 4, manual_grads=manual)
    (y, s), (y_ref, s_ref) = _both(spec, _init(arch), *_inputs(), segment_ids_BT=SEG)
    _close(y, y_ref)
    _close(s, s_ref)


@pytest.mark.parametrize("chunk,kind,objective", [(4, "linear", "l2"), (4, "mlp_norm", "dot"),
                                                  (16, "mlp_norm", "l2"), (16, "mlp", "l2")])
def test_read_after_write_dual_form_matches_reference(chunk, kind, objective):
    """Read-after-write in closed form (dual form, C x C per layer) == per-token loop."""
    arch = _arch(kind)
    spec = MemorySpec(arch, rules.OBJECTIVES[objective], optimizers.titans(), chunk,
                      read_after_write=True)
    (y, s), (y_ref, s_ref) = _both(spec, _init(arch), *_inputs(lr_max=0.3), segment_ids_BT=SEG)
    _close(y, y_ref)
    _close(s, s_ref)


@pytest.mark.parametrize("opt,raw", [("titans_general", True), ("titans_general", False),
                                     ("dgd", False), ("dgd", True)])
def test_general_path_matches_reference(opt, raw):
    """Per-token-gradient path (read-after-write, forced general path) and DGD's own chunk form
    (read-before-write) / its step scan (read-after-write), mid-chunk document starts."""
    arch = _arch("mlp_norm")
    inner = optimizers.dgd(True) if opt == "dgd" else optimizers.titans()
    spec = MemorySpec(arch, rules.l2, inner, 4, read_after_write=raw,
                      closed_form=opt != "titans_general")
    (y, s), (y_ref, s_ref) = _both(spec, _init(arch), *_inputs(lr_max=0.3), segment_ids_BT=SEG)
    _close(y, y_ref)
    _close(s, s_ref)


@pytest.mark.parametrize("kind", ["mlp_gain", "mlp_clip"])
@pytest.mark.parametrize("form", ["titans", "dgd", "general", "read_after"])
def test_output_forms_match_reference(kind, form):
    """The learned-gain and clipped-gradient memories (PAPER.md D2) in every chunk form (affine
    closed form, DGD's own, the step scan, the read-after-write dual form) == per-token loop."""
    arch = _arch(kind)
    inner = optimizers.dgd(True) if form == "dgd" else optimizers.titans()
    spec = MemorySpec(arch, rules.l2, inner, 4, read_after_write=form == "read_after",
                      closed_form=form != "general")
    ip = _init(arch)
    (y, s), (y_ref, s_ref) = _both(spec, ip, *_inputs(lr_max=0.3), segment_ids_BT=SEG)
    _close(y, y_ref)
    _close(s, s_ref)
    if kind == "mlp_clip":  # the clip binds: without it the state differs
        free = MemorySpec(_arch("mlp"), rules.l2, inner, 4, read_after_write=form == "read_after",
                          closed_form=form != "general")
        _, s_free = jax.jit(memory_scan, static_argnums=0)(free, ip, *_inputs(lr_max=0.3),
                                                           segment_ids_BT=SEG)
        assert not np.allclose(s.params[0], s_free.params[0], atol=1e-6)


def test_retention_acts_through_the_gain():
    """With lr = 0 the retention gate alone decays every fast weight: the read branch M(q) - q of
    the gained memory is exactly prod(retain) times that of the parameter-free normalised one
    (same W_0, W_1), which keeps its scale (its last layer's scale is invisible, PAPER.md D2)."""
    q, k, v, _ = _inputs()
    g = {"lr": jnp.zeros((B, H, T)), "retain": jnp.full((B, H, T), 0.8)}
    branch, ends = {}, {}
    for kind in ("mlp_norm", "mlp_gain"):
        arch = _arch(kind)
        spec = MemorySpec(arch, rules.l2, optimizers.titans(momentum=False), 4)
        ip = _init(arch)[:2] + ((jnp.ones((H, 1, K)),) if kind == "mlp_gain" else ())  # g = 1
        y, s = jax.jit(memory_scan, static_argnums=0)(spec, ip, q, k, v, g)
        branch[kind], ends[kind] = y - q, s.params
    decay = 0.8 ** (4 * (jnp.arange(T) // 4))  # tokens read the chunk-start weights (A1)
    _close(branch["mlp_gain"], decay[None, None, :, None] * branch["mlp_norm"])
    rms = jnp.sqrt(jnp.mean(branch["mlp_norm"][:, :, -4:] ** 2))
    assert float(rms) > 0.9  # ~1: the decayed W_1 only changes the eps of the norm
    _close(ends["mlp_gain"][-1], jnp.full((B, H, 1, K), 0.8 ** 16))


@pytest.mark.parametrize("opt", ["titans", "dgd", "titans_general"])
def test_padding_never_writes(opt):
    """`valid_T` (frame.pad_to_chunk): a sequence of 14 tokens padded to 16 ≡ the reference on
    the 14 tokens alone (outputs and end state), in every chunk form."""
    arch = _arch("mlp")
    inner = optimizers.dgd(True) if opt == "dgd" else optimizers.titans()
    spec = MemorySpec(arch, rules.l2, inner, 4, closed_form=opt != "titans_general")
    q, k, v, g = _inputs(lr_max=0.3)
    ip = _init(arch)
    y, s = jax.jit(memory_scan, static_argnums=0)(spec, ip, q, k, v, g, segment_ids_BT=SEG,
                                                  valid_T=jnp.arange(T) < 14)
    cut = lambda x: x[:, :, :14]
    y_ref, s_ref = jax.jit(reference_scan, static_argnums=0)(
        spec, ip, cut(q), cut(k), cut(v), {n: cut(x) for n, x in g.items()},
        segment_ids_BT=SEG[:, :14])
    _close(y[:, :, :14], y_ref)
    _close(s.params, s_ref.params)
    _close(s.opt_state, s_ref.opt_state)


@pytest.mark.parametrize("objective", ["l2", "dot"])
def test_chunk_one_is_exact_recurrence(objective):
    """C = 1 == Titans Eqs. 13-14 written out for a linear memory (row convention, SPEC A11)."""
    arch = _arch("linear")
    spec = MemorySpec(arch, rules.OBJECTIVES[objective], optimizers.titans(), 1)
    q, k, v, g = _inputs()
    ip = _init(arch)
    y, _ = jax.jit(memory_scan, static_argnums=0)(spec, ip, q, k, v, g)
    q, k, v = (np.asarray(x) for x in (q, k, v))
    g = {n: np.asarray(x) for n, x in g.items()}
    for b in range(B):
        for h in range(H):
            w, s = np.asarray(ip[0][h]), np.zeros((K, K))
            for t in range(T):
                np.testing.assert_allclose(y[b, h, t], q[b, h, t] @ w, rtol=1e-10, atol=1e-10)
                kt, vt = k[b, h, t], v[b, h, t]
                grad = np.outer(kt, kt @ w - vt) if objective == "l2" else -np.outer(kt, vt)
                s = g["momentum"][b, h, t] * s - g["lr"][b, h, t] * grad  # S_t (Eq. 14)
                w = g["retain"][b, h, t] * w + s                           # M_t (Eq. 13)


@pytest.mark.parametrize("closed_form", [True, False])
def test_segment_carry_equals_one_pass(closed_form):
    """Two calls carrying the state == one call (split at a chunk multiple, resets included)."""
    arch = _arch("mlp")
    spec = MemorySpec(arch, rules.l2, optimizers.titans(), 4, closed_form=closed_form,
                      remat_every=2)
    q, k, v, g = _inputs()
    ip = _init(arch)
    run = jax.jit(memory_scan, static_argnums=0)
    y, s = run(spec, ip, q, k, v, g, segment_ids_BT=SEG)
    half = lambda x, sl: x[:, :, sl] if x.ndim > 2 else x[:, sl]
    y1, s1 = run(spec, ip, *(half(x, slice(0, 8)) for x in (q, k, v)),
                 {n: half(x, slice(0, 8)) for n, x in g.items()}, segment_ids_BT=SEG[:, :8])
    y2, s2 = run(spec, ip, *(half(x, slice(8, 16)) for x in (q, k, v)),
                 {n: half(x, slice(8, 16)) for n, x in g.items()}, segment_ids_BT=SEG[:, 8:],
                 state=s1)
    _close(jnp.concatenate([y1, y2], axis=2), y)
    _close(s2, s)


def test_token_by_token_generation_equals_parallel():
    """Chunk size 1: T calls of one token each with the carried state == one parallel pass."""
    arch = _arch("mlp")
    spec = MemorySpec(arch, rules.l2, optimizers.titans(), 1)
    q, k, v, g = _inputs()
    ip = _init(arch)
    run = jax.jit(memory_scan, static_argnums=0)
    y, s = run(spec, ip, q, k, v, g, segment_ids_BT=SEG)
    state, ys = None, []
    for t in range(T):
        sl = slice(t, t + 1)
        yt, state = run(spec, ip, q[:, :, sl], k[:, :, sl], v[:, :, sl],
                        {n: x[:, :, sl] for n, x in g.items()}, segment_ids_BT=SEG[:, sl],
                        state=state)
        ys.append(yt)
    _close(jnp.concatenate(ys, axis=2), y)
    _close(state, s)


def test_batch_isolation_and_document_reset():
    """Row 0 ignores row 1; a packed document == the same document run alone (C = 4, aligned)."""
    arch = _arch("mlp")
    spec = MemorySpec(arch, rules.l2, optimizers.titans(), 4)
    q, k, v, g = _inputs()
    ip = _init(arch)
    run = jax.jit(memory_scan, static_argnums=0)
    y, _ = run(spec, ip, q, k, v, g)
    y_pert, _ = run(spec, ip, q.at[1].add(1.0), k.at[1].mul(-1.0), v.at[1].add(3.0), g)
    _close(y[0], y_pert[0], tol=0.0)
    assert not np.allclose(y[1], y_pert[1])
    seg = jnp.array([[0] * 8 + [1] * 8] * B)  # second document starts at a chunk boundary
    y_packed, _ = run(spec, ip, q, k, v, g, segment_ids_BT=seg)
    sl = lambda x: x[:, :, 8:]
    y_alone, _ = run(spec, ip, sl(q), sl(k), sl(v), {n: sl(x) for n, x in g.items()})
    _close(y_packed[:, :, 8:], y_alone)


def test_chunked_scan_remat_groups():
    """The scan helper: same result with and without grouped remat, also in the gradient."""
    xs = jnp.arange(24.0).reshape(2, 12) / 10

    def run(remat):
        def f(x):
            body = lambda c, xc: (c * 0.9 + jnp.sum(jnp.sin(xc), axis=1), xc * c[:, None])
            return chunked_scan(body, jnp.ones(2), x, chunk_size=2, axis=1, remat_every=remat)

        (c, ys), grad = f(xs), jax.grad(lambda x: jnp.sum(f(x)[1] ** 2))(xs)
        return c, ys, grad

    for a, b in zip(run(0), run(4)):  # 6 chunks; 4 rounds down to groups of 3
        _close(a, b, tol=1e-12)
    with pytest.raises(ValueError, match="multiple of chunk_size"):
        chunked_scan(lambda c, x: (c, x), 0.0, jnp.ones(5), chunk_size=2)
