"""Chunk-parallel inner loop vs its token-by-token reference (DESIGN §6 target: >= 20x at chunk 64).

    python benchmarks/inner_loop_speed.py                       # T=2048, chunk 64, B=4, H=4, K=64
    python benchmarks/inner_loop_speed.py --seq 512 --chunk 16 --grad

Memory: 2-layer residual MLP per head (hidden 4K, normalised output), L2 objective, Titans
momentum + forget gate (the `titans_lmm` default), fp32. The forms compute the same function
(the tests check it to 1e-10 in float64): every token's gradient at its chunk-start weights,
per-token momentum/decay.
`memory_scan` (closed form with one merged backward; with `jax.vjp` vmapped over the state
slots instead; read-after-write in dual form (a different function: tokens also see their own
chunk's writes); and its general token-by-token-inside-the-chunk path) is timed against
`reference_scan` (one `lax.scan` step per token). Times are medians of interleaved rounds
(block_until_ready) after compilation, so load on a shared machine hits every form alike.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hope_jax.memory import optimizers, rules  # noqa: E402
from hope_jax.memory.reference import reference_scan  # noqa: E402
from hope_jax.memory.scan import MemorySpec, memory_scan  # noqa: E402


def _inputs(b, h, t, k):
    ks = jax.random.split(jax.random.PRNGKey(0), 6)
    n = lambda i, shape: jax.random.normal(ks[i], shape, jnp.float32)
    unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)
    gates = rules.squash_gates({"lr": n(3, (b, h, t)) - 2, "momentum": n(4, (b, h, t)) + 2,
                                "retain": n(5, (b, h, t)) - 4}, 0.1)
    return unit(n(0, (b, h, t, k))), unit(n(1, (b, h, t, k))), n(2, (b, h, t, k)), gates


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--chunk", type=int, default=64)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--grad", action="store_true", help="time forward + backward (outer grads)")
    ap.add_argument("--json", type=str, default="")
    args = ap.parse_args(argv)

    b, h, t, k = args.batch, args.heads, args.seq, args.head_dim
    arch = rules.make_arch("mlp", k, k, depth=2, hidden_mult=4.0, out_norm=True)
    opt = optimizers.titans(momentum=True, decay=True)
    ip = jax.vmap(lambda kk: arch.init(kk))(jax.random.split(jax.random.PRNGKey(1), h))
    q, kk, v, gates = _inputs(b, h, t, k)
    forms = {
        "chunked_closed_form": (memory_scan, MemorySpec(arch, rules.l2, opt, args.chunk)),
        "chunked_vjp_slots": (memory_scan, MemorySpec(arch, rules.l2, opt, args.chunk,
                                                      manual_grads=False)),
        "chunked_read_after": (memory_scan, MemorySpec(arch, rules.l2, opt, args.chunk,
                                                       read_after_write=True)),
        "chunked_general": (memory_scan, MemorySpec(arch, rules.l2, opt, args.chunk,
                                                    closed_form=False)),
        "token_by_token": (reference_scan, MemorySpec(arch, rules.l2, opt, args.chunk)),
    }
    fns = {}
    for name, (fn, spec) in forms.items():
        if args.grad:
            f = jax.jit(jax.grad(lambda ip, q, fn=fn, spec=spec: jnp.sum(
                fn(spec, ip, q, kk, v, gates)[0] ** 2), argnums=(0, 1)))
        else:
            f = jax.jit(lambda ip, q, fn=fn, spec=spec: fn(spec, ip, q, kk, v, gates)[0])
        t0 = time.perf_counter()
        jax.block_until_ready(f(ip, q))
        fns[name] = f
        print(f"{name:22s} compiled + first call {time.perf_counter() - t0:6.1f}s", flush=True)
    times = {n: [] for n in fns}
    for _ in range(args.rounds):
        for name, f in fns.items():
            t0 = time.perf_counter()
            jax.block_until_ready(f(ip, q))
            times[name].append(time.perf_counter() - t0)
    med = {n: statistics.median(v) for n, v in times.items()}
    ref = med["token_by_token"]
    what = "fwd+bwd" if args.grad else "fwd"
    print(f"\n{what}: B={b} H={h} T={t} K={k} chunk={args.chunk} MLP hidden {4 * k}, "
          f"{jax.devices()[0].device_kind} x{jax.device_count()}")
    out = {"seq": t, "chunk": args.chunk, "batch": b, "heads": h, "head_dim": k,
           "mode": what, "device": jax.devices()[0].device_kind, "seconds": med, "speedup": {}}
    for name, s in med.items():
        tok_s = b * t / s
        out["speedup"][name] = ref / s
        print(f"  {name:22s} {s * 1e3:9.1f} ms  {tok_s:10.0f} tok/s  speedup x{ref / s:6.1f}")
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
