"""Per-device memory of a config's train step on a (possibly fake) mesh, without allocating.

The train step is lowered and compiled ahead of time on abstract inputs (`jax.ShapeDtypeStruct`
carrying the run's shardings) and `compiled.memory_analysis()` is read. Nothing is allocated,
so a 1.3B model on an 8-device mesh is planned on a laptop:

  python benchmarks/memory_plan.py --config=configs/transformer_1_3b.py --mesh=1,8,1 --devices=8
  python benchmarks/memory_plan.py --config=configs/transformer_760m.py --mesh=2,2,2 \
      --devices=8 --config.optim.grad_accum=4 --json=/tmp/plan.json

`--devices=N` fakes N host devices (CPU). Numbers come from the backend that compiles: on CPU the
temporaries are XLA:CPU's (no flash attention, its own fusion decisions); run the same command on
the accelerator for its exact figure. Params and optimizer state are exact (shard shapes).
"""

from __future__ import annotations

import os
import sys


def _early_devices() -> None:
    """--devices must take effect before jax is imported."""
    for i, arg in enumerate(sys.argv):
        n = arg.split("=", 1)[1] if arg.startswith("--devices=") else None
        if arg == "--devices" and i + 1 < len(sys.argv):
            n = sys.argv[i + 1]
        if n:
            os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                                       + f" --xla_force_host_platform_device_count={n}").strip()
            os.environ.setdefault("JAX_PLATFORMS", "cpu")


_early_devices()
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import json  # noqa: E402
import time  # noqa: E402

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from benchmarks.common import compiled_train_step  # noqa: E402
from hope_jax import cli  # noqa: E402
from hope_jax.config import replace, validate  # noqa: E402

config_flags.DEFINE_config_file("config", cli.DEFAULT_CONFIG, "Config file (configs/*.py).")
flags.DEFINE_string("mesh", "", "data,fsdp,tensor (-1 = fill); default: the config's mesh.")
flags.DEFINE_integer("devices", 0, "Fake this many CPU devices (0 = the real devices).")
flags.DEFINE_string("json", "", "Also write the numbers to this JSON file.")
FLAGS = flags.FLAGS
GIB = 1024**3


def _shard_bytes(abstract) -> int:
    """Bytes one device holds of a pytree of sharded ShapeDtypeStructs (the largest shard)."""
    total = 0
    for x in jax.tree.leaves(abstract):
        shape = x.sharding.shard_shape(x.shape)
        total += int(np.prod(shape)) * jnp.dtype(x.dtype).itemsize
    return total


def _fmt(n: int) -> str:
    return f"{n / GIB:9.3f} GiB" if n >= GIB // 4 else f"{n / 2**20:9.3f} MiB"


def plan(cfg) -> dict:
    """Compiles cfg's train step for its mesh; returns per-device bytes by category."""
    t0 = time.time()
    _, _, _, mesh, state, batch, ma = compiled_train_step(cfg)
    b, t = cfg.data.batch_size, cfg.data.seq_len
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(state.params))
    out = {
        "config_model": cfg.model.name, "params": n_params,
        "mesh": dict(mesh.shape), "devices": int(mesh.size), "backend": jax.default_backend(),
        "batch": b, "seq_len": t, "grad_accum": cfg.optim.grad_accum, "dtype": cfg.model.dtype,
        "remat": cfg.model.remat, "compile_s": round(time.time() - t0, 1),
        "params_bytes": _shard_bytes(state.params),
        "opt_state_bytes": _shard_bytes(state.opt_state),
        "batch_bytes": _shard_bytes(batch),
    }
    if ma is not None:
        out.update(argument_bytes=ma.argument_size_in_bytes, output_bytes=ma.output_size_in_bytes,
                   alias_bytes=ma.alias_size_in_bytes, temp_bytes=ma.temp_size_in_bytes,
                   code_bytes=ma.generated_code_size_in_bytes)
        # donated state aliases its outputs, so live = arguments + new outputs + temporaries
        out["peak_bytes"] = (ma.argument_size_in_bytes + ma.output_size_in_bytes
                             - ma.alias_size_in_bytes + ma.temp_size_in_bytes)
    return out


def main(argv):
    del argv
    raw = FLAGS.config
    cfg = cli.load_config(raw)
    if FLAGS.mesh:
        d, f, tp = (int(v) for v in FLAGS.mesh.split(","))
        cfg = replace(cfg, **{"mesh.data": d, "mesh.fsdp": f, "mesh.tensor": tp})
    cfg = validate(cfg)
    res = cli.run_guarded(plan, cfg)
    rows = [("params", "params_bytes"), ("optimizer state", "opt_state_bytes"),
            ("batch", "batch_bytes"), ("arguments (state + batch)", "argument_bytes"),
            ("outputs", "output_bytes"), ("donated (aliased)", "alias_bytes"),
            ("activations / temporaries", "temp_bytes"), ("peak (args+out-alias+temp)",
                                                          "peak_bytes")]
    print(f"{res['config_model']} {res['params'] / 1e6:.1f}M params, mesh {res['mesh']} "
          f"({res['backend']}), batch {res['batch']}x{res['seq_len']} accum {res['grad_accum']}, "
          f"{res['dtype']}, remat={res['remat']}, compiled in {res['compile_s']}s")
    print("per-device memory:")
    for label, key in rows:
        if key in res:
            print(f"  {label:<28} {_fmt(res[key])}")
    if FLAGS.json:
        with open(FLAGS.json, "w") as fh:
            json.dump(res, fh, indent=2)


if __name__ == "__main__":
    app.run(main)
