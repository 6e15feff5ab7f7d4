"""Sharding (DESIGN §3 invariant 7): the train step on 8 fake devices equals the single-device step.

Also: the rules table covers every param of the large configs, optimizer-state shardings are
derived for any optax state, checkpoints move between meshes, and bad meshes fail clearly.
"""

import importlib.util
import math
import os

import grain
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from hope_jax import sharding
from hope_jax.config import MeshConfig, validate
from hope_jax.models.lm import LM, MODELS
from hope_jax.train.checkpoint import Checkpointer
from hope_jax.train.state import abstract_state, init_state, make_optimizer, state_shardings
from hope_jax.train.step import jit_train_step
from tests.helpers import ROOT, tiny_config

# One line per model: sharding needs no model-specific code, so adding a model here is the test.
SHARDED_MODELS = [m for m in ("transformer", "titans_lmm", "hope") if m in MODELS]
MESHES = [(8, 1, 1), (1, 8, 1), (2, 2, 2)]
STEPS = 2
# fp32 tolerances; only the order of cross-device reductions differs. Losses: rtol 1e-5 (seen
# 2e-7). Optimizer moments (sharded gradient sums): each leaf within 1e-4 of its max |value|
# (seen 2e-5). Params: AdamW normalizes every coordinate, so a coordinate whose gradient is ~0
# up to rounding may move by up to lr whatever the mesh; hence each leaf's update (params - init)
# must agree in norm to 1e-3 relative (seen 2e-4), and every coordinate to within 2 lr per step.
LOSS_RTOL, MOMENT_TOL, UPDATE_RTOL = 1e-5, 1e-4, 1e-3

def _cfg(model: str, mesh=(1, 1, 1), **kw):
    d, f, t = mesh
    return tiny_config(**{"model.name": model, "model.d_model": 64, "model.num_heads": 4,
                          "data.batch_size": 16, "data.seq_len": 32, "optim.grad_accum": 2,
                          "optim.warmup_steps": 0, "mesh.data": d, "mesh.fsdp": f,
                          "mesh.tensor": t, **kw})


def _batch(cfg, step: int):
    """Deterministic arange-style batch; two documents per row, a few masked targets."""
    b, t = cfg.data.batch_size, cfg.data.seq_len
    ids = (np.arange(b * t).reshape(b, t) * (7 + step) + 3 * np.arange(b)[:, None]) % 251
    seg = np.where(np.arange(t)[None, :] < t // 2 + np.arange(b)[:, None] % 5, 1, 2)
    pos = np.where(seg == 1, np.arange(t), np.arange(t) - (t // 2 + np.arange(b)[:, None] % 5))
    mask = np.ones((b, t), np.float32)
    mask[:, :3] = 0.0
    return {"inputs": ids.astype(np.int32), "targets": np.roll(ids, -1, 1).astype(np.int32),
            "positions": pos.astype(np.int32), "segment_ids": seg.astype(np.int32), "mask": mask}


def _run(cfg, steps: int = STEPS):
    """(initial params, losses, final state) of `steps` train steps on cfg's mesh, on host."""
    mesh = sharding.make_mesh(cfg.mesh)
    model = LM(cfg.model)
    tx = make_optimizer(cfg, model)
    sh = state_shardings(cfg, model, tx, mesh)
    state = init_state(cfg, model, tx, mesh)
    leaves, shs = jax.tree.leaves(state), jax.tree.leaves(sh)
    assert all(x.sharding == s for x, s in zip(leaves, shs))  # born in its sharding
    init = jax.device_get(state.params)
    step = jit_train_step(model, tx, cfg.optim.grad_accum, mesh, sh)
    losses = []
    for i in range(steps):
        state, m = step(state, sharding.place_batch(_batch(cfg, i), mesh))
        losses.append(float(m["loss"]))
    assert all(x.sharding == s for x, s in zip(jax.tree.leaves(state), shs))
    return init, losses, jax.device_get(state)


_REFERENCE = {}


def _reference(model: str):
    if model not in _REFERENCE:
        _REFERENCE[model] = _run(_cfg(model))
    return _REFERENCE[model]


def _cases():
    """Every (model, mesh). Memory models are in the slow suite (-m slow): on 2 shared CPU cores
    their sharded step compiles in minutes (titans_lmm 2x2x2 took 147 s, hope 2x2x2 623 s)."""
    for model in SHARDED_MODELS:
        for mesh in MESHES:
            slow = model != "transformer"
            yield pytest.param(model, mesh, id=f"{model}-{'x'.join(map(str, mesh))}",
                               marks=[pytest.mark.slow] if slow else [])


# The memory models at tiny size on a 1 x 2 x 1 mesh (fsdp 2), in the default suite: d=32, one
# layer, T=16; HOPE with an in-context (ntp, first-order) CMS level of period 8.
TINY = {"model.d_model": 32, "model.num_heads": 2, "model.num_layers": 1, "model.mlp_hidden": 32,
        "data.batch_size": 4, "data.seq_len": 16, "optim.grad_accum": 1,
        "model.inner.chunk_size": 4,
        "model.hope.cms_periods": (8, 0), "model.hope.cms_first_order": True}


@pytest.mark.parametrize("model,over", [
    ("titans_lmm", {}),  # ~75 s on 2 cores
    # the self-modifying mixer and the in-context (ntp) CMS level, its per-sequence fast parts
    # constrained to the params' axes: ~130 s on 2 quiet cores
    pytest.param("hope", {}, id="hope-ntp")])
def test_tiny_train_step_on_fsdp2_equals_single_device(model, over):
    _check_mesh_equals_single(model, (1, 2, 1), {**TINY, **over})


@pytest.mark.parametrize("model,mesh", list(_cases()))
def test_train_step_on_mesh_equals_single_device(model, mesh):
    _check_mesh_equals_single(model, mesh, {})


def _check_mesh_equals_single(model, mesh, over):
    init1, loss1, state1 = _reference(model) if not over else _run(_cfg(model, **over))
    init8, loss8, state8 = _run(_cfg(model, mesh, **over))
    jax.tree.map(np.testing.assert_array_equal, init1, init8)  # init is mesh-independent
    np.testing.assert_allclose(loss8, loss1, rtol=LOSS_RTOL)
    assert int(state8.step) == int(state1.step) == STEPS
    for a, b in zip(jax.tree.leaves(state1.opt_state), jax.tree.leaves(state8.opt_state)):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        assert np.max(np.abs(a - b), initial=0) <= MOMENT_TOL * np.max(np.abs(a), initial=0)
    lr = _cfg(model, **over).optim.lr
    flat = jax.tree_util.tree_flatten_with_path(init1)[0]
    for (path, p0), a, b in zip(flat, jax.tree.leaves(state1.params),
                                jax.tree.leaves(state8.params)):
        da, db = np.asarray(a, np.float64) - p0, np.asarray(b, np.float64) - p0
        key = jax.tree_util.keystr(path)
        assert np.linalg.norm(da - db) <= UPDATE_RTOL * np.linalg.norm(da) + 1e-12, key
        assert np.max(np.abs(da - db)) <= 2 * lr * STEPS, key


def _load_config(name: str):
    spec = importlib.util.spec_from_file_location(name, os.path.join(ROOT, "configs", f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return validate(mod.get_config())


@pytest.mark.parametrize("mesh", [(1, 8, 1), (1, 4, 2), (2, 2, 2)],
                         ids=lambda m: "x".join(map(str, m)))
@pytest.mark.parametrize("name", ["transformer_760m", "transformer_1_3b"])
def test_large_config_every_param_sharded(name, mesh):
    """From jax.eval_shape only: every large tensor of params + AdamW state is split."""
    d, f, t = mesh
    cfg = _load_config(name)
    cfg = validate({**cfg.to_dict(), "mesh": {**cfg.to_dict()["mesh"], "data": d, "fsdp": f,
                                              "tensor": t, "replicated_params": "error"}})
    m = sharding.make_mesh(cfg.mesh)
    model = LM(cfg.model)
    tx = make_optimizer(cfg, model)
    sh = state_shardings(cfg, model, tx, m)  # raises on an unknown axis or a replicated tensor
    abstract = abstract_state(cfg, model, tx, sh)
    n = sum(math.prod(x.shape) for x in jax.tree.leaves(abstract.params))
    assert abs(n / {"transformer_760m": 760e6, "transformer_1_3b": 1.3e9}[name] - 1) < 0.05
    shard = lambda tree: sum(math.prod(x.sharding.shard_shape(x.shape))
                             for x in jax.tree.leaves(tree))
    # Only norm scales (a few K elements each) may stay whole: per-device share is ~1/(f*t).
    assert shard(abstract.params) <= n / (f * t) * 1.01
    assert shard(abstract.opt_state) <= 2 * n / (f * t) * 1.01 + 1
    assert not sharding.check_replication(abstract, sh, m, "error")


def test_param_counts_of_paper_configs():
    for name, nominal in [("transformer_340m", 340e6), ("transformer_760m", 760e6),
                          ("transformer_1_3b", 1.3e9)]:
        cfg = _load_config(name)
        shapes = jax.tree.leaves(abstract_state(cfg, LM(cfg.model), make_optimizer(cfg)).params)
        assert abs(sum(math.prod(x.shape) for x in shapes) / nominal - 1) < 0.05, name


def test_checkpoint_moves_between_meshes(tmp_path):
    """Saved sharded over fsdp=8, restored onto data=fsdp=tensor=2: equal values, new shardings."""
    src, dst = _cfg("transformer", (1, 8, 1)), _cfg("transformer", (2, 2, 2))
    model = LM(src.model)
    tx = make_optimizer(src, model)
    state = init_state(src, model, tx, sharding.make_mesh(src.mesh))
    ck = Checkpointer(str(tmp_path), async_save=False)
    ck.save(1, state, iter(grain.MapDataset.range(4).to_iter_dataset()), {"model": {}})
    ck.close()
    dst_sh = state_shardings(dst, model, tx, sharding.make_mesh(dst.mesh))
    ck = Checkpointer(str(tmp_path), read_only=True)
    restored, _ = ck.restore(1, abstract_state(dst, model, tx, dst_sh))
    ck.close()
    jax.tree.map(lambda x, s: assert_sharding(x, s), restored, dst_sh)
    jax.tree.map(np.testing.assert_array_equal, jax.device_get(state), jax.device_get(restored))


def assert_sharding(x, s):
    assert x.sharding == s


# --- the rules and the generic pieces -------------------------------------------------------


def _mesh(d, f, t):
    return sharding.make_mesh(MeshConfig(data=d, fsdp=f, tensor=t))


def test_rules_table_to_specs():
    m = _mesh(2, 2, 2)
    spec = lambda names, shape: sharding.logical_to_spec(names, shape, m)
    assert spec(("layers", "embed", "mlp"), (4, 64, 128)) == P(None, "fsdp", "tensor")
    assert spec(("vocab", "embed"), (256, 64)) == P("tensor", "fsdp")
    assert spec(("vocab", "embed"), (257, 64)) == P(None, "fsdp")  # 257 % 2: vocab replicated
    assert spec(("batch", "length", "embed"), (8, 16, 64)) == P(("data", "fsdp"), None, None)
    assert spec(("batch", "heads", None, None), (2, 4, 8, 8)) == P("data", "tensor", None, None)
    assert sharding.logical_to_spec(("embed", "mlp"), (64, 128), _mesh(8, 1, 1)) == P(None, None)
    with pytest.raises(sharding.ShardingError, match="'memory_width' .* not in the rules table"):
        spec(("embed", "memory_width"), (64, 64))


def test_fsdp_fallback_for_params_without_embed():
    """A fast memory's initial weights [L, H, K, F] carry no `embed`: fsdp takes the largest dim."""
    axes = {"w": ("layers", "heads", None, None), "small": ("layers", "heads", None),
            "q": ("embed", "heads", "kv")}
    params = {"w": jax.ShapeDtypeStruct((3, 4, 128, 512), jnp.float32),
              "small": jax.ShapeDtypeStruct((3, 4, 64), jnp.float32),
              "q": jax.ShapeDtypeStruct((64, 4, 16), jnp.float32)}
    spec = lambda m: {k: v.spec for k, v in sharding.param_shardings(axes, params, m).items()}
    assert spec(_mesh(1, 8, 1)) == {"w": P(None, None, None, "fsdp"), "small": P(None, None, None),
                                    "q": P("fsdp", None, None)}
    assert spec(_mesh(1, 4, 2))["w"] == P(None, "tensor", None, "fsdp")
    assert spec(_mesh(8, 1, 1))["w"] == P(None, None, None, None)  # pure DP: replicated


def test_optimizer_state_shardings_follow_params():
    """Any optax state: moments mirror params; factored stats keep the dims they share."""
    m = _mesh(1, 4, 2)
    params = {"w": jax.ShapeDtypeStruct((64, 128), jnp.float32),
              "blocks": {"k": jax.ShapeDtypeStruct((3, 64, 256), jnp.float32)},
              "scale": jax.ShapeDtypeStruct((64,), jnp.float32)}
    axes = {"w": ("embed", "mlp"), "blocks": {"k": ("layers", "embed", "mlp")}, "scale": ("embed",)}
    psh = sharding.param_shardings(axes, params, m)
    for tx in [optax.adamw(1e-3), optax.adafactor(1e-3, min_dim_size_to_factor=8),
               optax.multi_transform({"a": optax.adam(1e-3), "b": optax.sgd(1e-3, 0.9)},
                                     {"w": "a", "blocks": {"k": "b"}, "scale": "a"})]:
        state = jax.eval_shape(tx.init, params)
        sh = sharding.derive_shardings(state, params, psh, m)
        flat = jax.tree_util.tree_flatten_with_path(state)[0]
        for (path, leaf), s in zip(flat, jax.tree.leaves(sh)):
            key = jax.tree_util.keystr(path)
            if leaf.shape == (3, 64, 256):
                assert s.spec == P(None, "fsdp", "tensor"), key
            elif leaf.shape == (64, 128):
                assert s.spec == P("fsdp", "tensor"), key
            elif leaf.ndim == 0:
                assert s.spec == P(), key


def test_replication_check():
    m = _mesh(1, 8, 1)
    tree = {"big": jax.ShapeDtypeStruct((1025, 1025), jnp.float32)}
    sh = {"big": sharding.replicated(m)}
    with pytest.warns(UserWarning, match=r"\['big'\] \(1025, 1025\)"):
        sharding.check_replication(tree, sh, m)
    with pytest.raises(sharding.ShardingError, match="fully replicated"):
        sharding.check_replication(tree, sh, m, "error")
    assert sharding.check_replication(tree, {"big": sharding.replicated(_mesh(8, 1, 1))},
                                      _mesh(8, 1, 1), "error") == []  # pure data parallel


def test_mesh_config_fill_and_errors():
    assert sharding.mesh_axis_sizes(MeshConfig(data=2, fsdp=-1), 8) == (2, 4, 1)
    assert sharding.mesh_axis_sizes(MeshConfig(), 8) == (1, 1, 1)  # default: one device
    with pytest.raises(sharding.ShardingError, match="needs 16 devices; 8 available"):
        sharding.make_mesh(MeshConfig(data=4, fsdp=4))
    with pytest.raises(sharding.ShardingError, match="3 does not divide the 8 devices"):
        sharding.make_mesh(MeshConfig(data=3, fsdp=-1))
    with pytest.raises(sharding.ShardingError, match=r"batch_size=8 / .*grad_accum=2 must be"):
        sharding.check_batch(8, 2, _mesh(8, 1, 1))
    with pytest.raises(Exception, match="at most one of data/fsdp/tensor may be -1"):
        tiny_config(**{"mesh.data": -1, "mesh.fsdp": -1})


def test_batch_placement_and_activation_constraints():
    m = _mesh(2, 2, 2)
    batch = sharding.place_batch(_batch(_cfg("transformer"), 0), m)
    assert batch["inputs"].sharding.spec == P(("data", "fsdp"), None)
    assert batch["inputs"].addressable_shards[0].data.shape == (4, 32)
    x = jnp.ones((8, 4, 16, 16))
    names = ("batch", "heads", None, None)
    assert sharding.constrain(x, names) is x  # no mesh: no-op
    with sharding.mesh_context(m):
        y = jax.jit(lambda a: sharding.constrain(a, names))(x)
    assert tuple(y.sharding.spec)[:2] == (("data", "fsdp"), "tensor")
