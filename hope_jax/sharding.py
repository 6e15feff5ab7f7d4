"""Device mesh, the ONE logical-axis rules table, and sharding of state, batches, activations.

Layers name the dims of every param (and, where they help XLA, of activations) with *logical*
axes (`embed`, `mlp`, `heads`, ...; see `hope_jax.nn.layers`). `RULES` maps each logical axis to
mesh axes of a `data x fsdp x tensor` mesh. Everything else is derived:

* params: `param_shardings` from the logical axes read off `jax.eval_shape` of the init; a param
  that no rule splits over `fsdp` (no `embed` dim) gets `fsdp` on its largest free dim;
* optimizer state (any optax state): `derive_shardings` matches each leaf to the param it mirrors
  by tree path (`mu/<param path>`), so a new optimizer needs no sharding code either;
* batches: split along `batch` -> (data, fsdp), placed with `place_batch` from each process's rows;
* activations and fast-memory state: `constrain`, a no-op without a mesh.

A new model therefore gets sharded with zero code: annotate params with known logical names.
An unknown name raises `ShardingError`; a mesh axis that does not divide a dim is dropped for that
dim (the dim is replicated), and `check_replication` reports large params left fully replicated.

Axis types are `AxisType.Auto` (GSPMD propagation from in/out shardings and constraints): with
`Explicit` axes, Linen layers fail to trace, e.g. the embedding gather of an fsdp-sharded table by
batch-sharded ids needs an explicit `out_sharding` (jax 0.10.2 `ShardingTypeError`), and so would
every matmul contracting an fsdp-sharded dim. Auto keeps layer math free of mesh axis names.
"""

from __future__ import annotations

import contextlib
import math
import os
import warnings
from collections.abc import Iterator, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from hope_jax.config_fields import ConfigError

__all__ = ["MESH_AXES", "RULES", "ShardingError", "batch_sharding", "check_batch",
           "check_replication", "constrain", "derive_shardings",
           "initialize_distributed", "logical_to_spec", "make_mesh", "mesh_axis_sizes",
           "mesh_context", "param_shardings", "place_batch", "replicated"]

MESH_AXES = ("data", "fsdp", "tensor")

# The one table: logical axis -> mesh axes (None = replicated). Order matters: when two dims of
# one array map to the same mesh axis, the earlier dim takes it (an activation [B, T, D] is split
# on B by (data, fsdp), so its `embed` dim stays whole; a kernel [D, F] is split on D by fsdp).
RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    ("batch", ("data", "fsdp")),  # activations, batches and fast-memory state
    ("length", None),             # time (no sequence parallelism)
    ("layers", None),             # the nn.scan stacking axis
    ("vocab", "tensor"),
    ("heads", "tensor"),
    ("mlp", "tensor"),
    ("embed", "fsdp"),            # ZeRO-3 style: every matrix has an embed dim
    ("kv", None),                 # head dim (K, V of attention and fast memories)
    ("conv", None),               # short-conv taps
)

LARGE_PARAM = 1 << 20  # elements; larger params must not be fully replicated on a sharded mesh
FSDP_FALLBACK_MIN = 1 << 16  # elements; smaller params without an fsdp dim stay replicated


class ShardingError(ConfigError):
    """The mesh does not fit the devices, batch, or the params' logical axes."""


# --------------------------------------------------------------------------------------------
# Multi-host start-up and the mesh
# --------------------------------------------------------------------------------------------


def _env_count(*names: str) -> int:
    for n in names:
        v = os.environ.get(n, "")
        if v.strip().isdigit():
            return int(v)
    return 0


def _cluster_detected() -> bool:
    """True when a multi-process launcher or Cloud TPU VM is visible in the environment."""
    if _env_count("SLURM_NTASKS", "SLURM_NPROCS") > 1 or _env_count("OMPI_COMM_WORLD_SIZE") > 1:
        return True
    hosts = os.environ.get("TPU_PROCESS_ADDRESSES") or os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if len([h for h in hosts.split(",") if h]) > 1:
        return True
    try:  # private in jax 0.10; a Cloud TPU VM (single or multi host) initializes itself
        from jax._src.cloud_tpu_init import running_in_cloud_tpu_vm
    except ImportError:  # pragma: no cover
        return False
    return bool(running_in_cloud_tpu_vm)


def initialize_distributed(mesh_cfg) -> bool:
    """Calls `jax.distributed.initialize` when the config or the environment asks for it.

    Call it before anything touches a device. Explicit: `mesh_cfg.coordinator_address` (or env
    `JAX_COORDINATOR_ADDRESS`) with `num_processes` / `process_id` (or env `JAX_NUM_PROCESSES` /
    `JAX_PROCESS_ID`). Auto-detected (`mesh_cfg.distributed="auto"`): SLURM or Open MPI with more
    than one task, a Cloud TPU VM or multi-worker TPU env. `"on"` always initializes (jax then
    auto-detects), `"off"` never does.

    Args:
      mesh_cfg: `config.mesh` (a `hope_jax.config.MeshConfig`).

    Returns:
      True if this call initialized the distributed runtime.
    """
    if mesh_cfg.distributed == "off" or jax.distributed.is_initialized():
        return False
    address = mesh_cfg.coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    if address:
        n = mesh_cfg.num_processes or _env_count("JAX_NUM_PROCESSES")
        pid = mesh_cfg.process_id if mesh_cfg.process_id >= 0 else os.environ.get("JAX_PROCESS_ID")
        if not n or pid is None or str(pid).strip() == "":
            raise ShardingError(
                f"coordinator {address!r} given but not config.mesh.num_processes/process_id "
                "(or env JAX_NUM_PROCESSES / JAX_PROCESS_ID)")
        jax.distributed.initialize(address, num_processes=n, process_id=int(pid))
        return True
    if mesh_cfg.distributed == "on" or _cluster_detected():
        jax.distributed.initialize()
        return True
    return False


def mesh_axis_sizes(mesh_cfg, num_devices: int) -> tuple[int, int, int]:
    """(data, fsdp, tensor) with a -1 entry filled so the product is `num_devices` (or less)."""
    sizes = [mesh_cfg.data, mesh_cfg.fsdp, mesh_cfg.tensor]
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if num_devices % known:
            raise ShardingError(f"config.mesh {dict(zip(MESH_AXES, sizes))}: {known} does not "
                                f"divide the {num_devices} devices")
        sizes[sizes.index(-1)] = num_devices // known
    if math.prod(sizes) > num_devices:
        raise ShardingError(f"config.mesh {dict(zip(MESH_AXES, sizes))} needs "
                            f"{math.prod(sizes)} devices; {num_devices} available")
    return tuple(sizes)


def make_mesh(mesh_cfg, devices: Sequence[Any] | None = None) -> Mesh:
    """A `data x fsdp x tensor` mesh (`AxisType.Auto`) over the first prod(sizes) devices.

    Args:
      mesh_cfg: `config.mesh`; the defaults (1, 1, 1) give a one-device mesh.
      devices: devices to use (default `jax.devices()`, all processes).
    """
    devices = list(jax.devices() if devices is None else devices)
    sizes = mesh_axis_sizes(mesh_cfg, len(devices))
    n = math.prod(sizes)
    if jax.process_count() > 1 and n != len(devices):
        raise ShardingError(f"config.mesh {dict(zip(MESH_AXES, sizes))} uses {n} of "
                            f"{len(devices)} devices; a multi-process run must use all of them "
                            "(set one axis to -1)")
    return jax.make_mesh(sizes, MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices[:n])


@contextlib.contextmanager
def mesh_context(mesh: Mesh) -> Iterator[Mesh]:
    """Sets `mesh` as the current mesh (for `constrain`) and the rules for Flax's own helpers."""
    with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
        yield mesh


# --------------------------------------------------------------------------------------------
# Logical axes -> PartitionSpec
# --------------------------------------------------------------------------------------------


def _as_tuple(axes) -> tuple[str, ...]:
    if axes is None:
        return ()
    return (axes,) if isinstance(axes, str) else tuple(axes)


def logical_to_spec(names: Sequence[str | None], shape: Sequence[int], mesh,
                    rules=RULES) -> PartitionSpec:
    """PartitionSpec of an array whose dims have logical `names` (None = replicated dim).

    Mesh axes of size 1, axes already used by an earlier-ruled dim, and axes whose size does not
    divide the dim (after the ones already chosen for it) are skipped for that dim.

    Raises:
      ShardingError: a name that is not in `rules`.
    """
    table = dict(rules)
    if len(names) != len(shape):
        raise ShardingError(f"logical axes {tuple(names)} do not match shape {tuple(shape)}")
    for name in names:
        if name is not None and name not in table:
            raise ShardingError(f"logical axis {name!r} (of {tuple(names)}) is not in the rules "
                                f"table hope_jax.sharding.RULES: {sorted(table)}")
    sizes = dict(mesh.shape)
    spec: list[Any] = [None] * len(names)
    used: set[str] = set()
    for rule_name, _ in rules:  # table order decides which dim gets a contested mesh axis
        for i, name in enumerate(names):
            if name != rule_name:
                continue
            chosen, prod = [], 1
            for ax in _as_tuple(table[name]):
                size = sizes.get(ax, 1)
                if size > 1 and ax not in used and shape[i] % (prod * size) == 0:
                    chosen.append(ax)
                    prod *= size
            used.update(chosen)
            spec[i] = None if not chosen else chosen[0] if len(chosen) == 1 else tuple(chosen)
    return PartitionSpec(*spec)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def _fsdp_fallback(spec: PartitionSpec, names: Sequence[str | None], shape: Sequence[int],
                   mesh: Mesh) -> PartitionSpec:
    """Gives `fsdp` to the largest free dim of a param that no rule split over fsdp.

    Params whose dims carry no `embed` (a fast memory's per-head initial weights [L, H, K, F],
    conv taps over channels, ...) would otherwise be whole on every device under pure FSDP. The
    stacked `layers` dim is never chosen (scan slices it one layer at a time).
    """
    size = dict(mesh.shape).get("fsdp", 1)
    entries = list(spec) + [None] * (len(shape) - len(spec))
    used = {a for e in entries for a in _as_tuple(e)}
    if size == 1 or "fsdp" in used or math.prod(shape) < FSDP_FALLBACK_MIN:
        return spec
    free = [i for i, (e, n) in enumerate(zip(entries, names))
            if e is None and n != "layers" and shape[i] % size == 0]
    if not free:
        return spec
    entries[max(free, key=lambda i: shape[i])] = "fsdp"
    return PartitionSpec(*entries)


def param_shardings(axes_tree: Any, abstract_params: Any, mesh: Mesh, rules=RULES) -> Any:
    """NamedSharding per param from its logical axes (`hope_jax.train.state.logical_axes`).

    `rules` first; then params of >= `FSDP_FALLBACK_MIN` elements that got no fsdp axis are split
    over fsdp on their largest free dim (`_fsdp_fallback`), so any model is fully sharded.
    """

    def one(axes, p):
        spec = logical_to_spec(axes, p.shape, mesh, rules)
        return NamedSharding(mesh, _fsdp_fallback(spec, axes, p.shape, mesh))

    return jax.tree.map(one, axes_tree, abstract_params, is_leaf=lambda x: isinstance(x, tuple))


def _key(k) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(k, attr):
            return str(getattr(k, attr))
    return str(k)


def derive_shardings(abstract_tree: Any, abstract_params: Any, params_sh: Any,
                     mesh: Mesh) -> Any:
    """Shardings for any pytree holding params and optimizer state (any optax state).

    A leaf whose tree path ends with a param's path (`mu/blocks/mlp/up/kernel`) mirrors that
    param: it gets the param's spec on every dim of equal size (e.g. factored second moments keep
    the dims they share with the param). A leaf with no such path gets the spec shared by all
    params of its exact shape, if there is one; anything else (counts, scalars) is replicated.
    """
    by_path, by_shape = {}, {}
    flat_p = jax.tree_util.tree_flatten_with_path(abstract_params)[0]
    for (path, p), sh in zip(flat_p, jax.tree.leaves(params_sh)):
        by_path[tuple(_key(k) for k in path)] = (p.shape, sh.spec)
        by_shape.setdefault(tuple(p.shape), set()).add(sh.spec)

    def one(path, leaf):
        keys = tuple(_key(k) for k in path)
        shape = tuple(getattr(leaf, "shape", ()))
        for start in range(len(keys)):
            hit = by_path.get(keys[start:])
            if hit is None:
                continue
            pshape, spec = hit
            if len(pshape) != len(shape):
                break
            entries = tuple(spec) + (None,) * (len(shape) - len(spec))
            kept = (e if a == b else None for e, a, b in zip(entries, shape, pshape))
            return NamedSharding(mesh, PartitionSpec(*kept))
        specs = by_shape.get(shape, set())
        if len(shape) and len(specs) == 1:
            return NamedSharding(mesh, next(iter(specs)))
        return replicated(mesh)

    return jax.tree_util.tree_map_with_path(one, abstract_tree)


def check_replication(abstract_tree: Any, shardings: Any, mesh: Mesh, mode: str = "warn",
                      threshold: int = LARGE_PARAM) -> list[str]:
    """Reports leaves > `threshold` elements fully replicated although fsdp x tensor > 1.

    Args:
      abstract_tree, shardings: matching pytrees of arrays (or ShapeDtypeStructs) and shardings.
      mode: "warn" (warnings.warn), "error" (raise ShardingError) or "ignore".

    Returns:
      One line per offending leaf (path, shape).
    """
    sizes = dict(mesh.shape)
    if mode == "ignore" or sizes.get("fsdp", 1) * sizes.get("tensor", 1) == 1:
        return []
    flat = jax.tree_util.tree_flatten_with_path(abstract_tree)[0]
    bad = [f"{jax.tree_util.keystr(path)} {tuple(x.shape)}"
           for (path, x), sh in zip(flat, jax.tree.leaves(shardings))
           if math.prod(x.shape) > threshold and all(e is None for e in sh.spec)]
    if bad:
        msg = (f"{len(bad)} large arrays are fully replicated on mesh {sizes} (no logical axis "
               "of theirs divides by a mesh axis; see hope_jax.sharding.RULES): "
               + "; ".join(bad[:5]))
        if mode == "error":
            raise ShardingError(msg + " (config.mesh.replicated_params='warn' to allow)")
        warnings.warn(msg, stacklevel=2)
    return bad


# --------------------------------------------------------------------------------------------
# Batches and activations
# --------------------------------------------------------------------------------------------


def batch_sharding(mesh: Mesh, ndim: int = 2) -> NamedSharding:
    """Sharding of a [B, ...] batch leaf: rows over (data, fsdp)."""
    spec = PartitionSpec(_batch_axes(mesh) or None, *([None] * (ndim - 1)))
    return NamedSharding(mesh, spec)


def _batch_axes(mesh) -> tuple[str, ...]:
    sizes = dict(mesh.shape)
    return tuple(a for a in _as_tuple(dict(RULES)["batch"]) if sizes.get(a, 1) > 1)


def check_batch(global_batch: int, grad_accum: int, mesh: Mesh) -> None:
    """Raises ShardingError unless every micro-batch splits evenly over the batch mesh axes."""
    shards = math.prod(dict(mesh.shape)[a] for a in _batch_axes(mesh))
    if (global_batch // grad_accum) % shards:
        raise ShardingError(
            f"config.data.batch_size={global_batch} / config.optim.grad_accum={grad_accum} must "
            f"be divisible by mesh data x fsdp = {shards}")
    if shards % jax.process_count():
        raise ShardingError(f"mesh data x fsdp = {shards} must be a multiple of the "
                            f"{jax.process_count()} processes (each feeds its own rows)")


def place_batch(batch: dict[str, Any], mesh: Mesh) -> dict[str, jax.Array]:
    """Global batch arrays from this process's rows (`make_array_from_process_local_data`)."""
    out = {}
    for k, v in batch.items():
        v = np.asarray(v)
        shape = (v.shape[0] * jax.process_count(),) + v.shape[1:]
        out[k] = jax.make_array_from_process_local_data(batch_sharding(mesh, v.ndim), v, shape)
    return out


def constrain(x: jax.Array, names: Sequence[str | None], rules=RULES) -> jax.Array:
    """`with_sharding_constraint` by logical names; a no-op outside `mesh_context`.

    Use it where XLA needs help, e.g. `constrain(x_BTD, ("batch", "length", "embed"))`. Under
    `vmap`, name only the dims of the per-example value the function sees.
    """
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or math.prod(mesh.shape.values()) == 1:
        return x
    return jax.lax.with_sharding_constraint(x, logical_to_spec(names, x.shape, mesh, rules))
