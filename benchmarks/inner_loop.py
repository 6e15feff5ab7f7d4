"""The inner loop alone: chunk-parallel vs token-by-token reference, chunk sweep, remat, bf16.

    python benchmarks/inner_loop.py                      # all sections, T=2048, B=4, H=4, K=64
    python benchmarks/inner_loop.py --sections=forms --seq=512 --chunk=16 --fwd
    python benchmarks/inner_loop.py --json=runs/inner_loop.json

Memory: 2-layer residual MLP per head (hidden 4K, normalised output), L2 objective, Titans
momentum + forget gate (the `titans_lmm` default), per-token gates. Every variant is jitted as
forward + backward (outer gradients w.r.t. the initial fast weights and the queries; `--fwd`:
forward only) and compiled ahead of time; memory is XLA's temporaries of the compiled step and
times are medians of interleaved rounds after compilation, so machine noise hits every variant
of a section alike.

Sections:
  forms  `memory_scan` in its forms (closed form with one merged backward; `jax.vjp` vmapped over
         the state slots; read-after-write dual form (a different function: tokens also see their
         own chunk's writes); the general token-by-token-inside-the-chunk path) against
         `reference_scan` (one `lax.scan` step per token). The forms compute the same function:
         the tests check it to 1e-10 in float64.
  chunk  closed form at chunk sizes 16 ... 256 (a different function per chunk: every token's
         gradient is taken at its chunk-start weights, SPEC A1/A2).
  remat  closed form with `jax.checkpoint` every 0 (off), 1, 4, 16 chunks.
  dtype  fp32 vs bf16 inputs and initial weights. The fast state itself stays fp32 (SPEC §7.1:
         `scan._state_dtype`); a bf16 state is not offered. Reports rms(y - y_fp32) /
         rms(y_fp32) over all tokens, the first and the last chunk, also for fp32 arithmetic on
         the bf16-rounded inputs (the recurrence's own sensitivity to input perturbations).
  flush  the linear memories' fast form (`delta_chunk.chunk_linear_memory`, gated delta rule,
         per-token log retention in [-3, -0.5]: a fast decay) with decay factors below eps^2
         flushed to 0 (default) and kept (subnormal floats); reports the outputs' max relative
         difference (PAPER.md D15).
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import interleaved_times, write_json  # noqa: E402
from hope_jax.memory import optimizers, rules  # noqa: E402
from hope_jax.memory.delta_chunk import chunk_linear_memory  # noqa: E402
from hope_jax.memory.reference import reference_scan  # noqa: E402
from hope_jax.memory.scan import MemorySpec, MemoryState, memory_scan  # noqa: E402

SECTIONS = ("forms", "chunk", "remat", "dtype", "flush")


def _inputs(b, h, t, k):
    ks = jax.random.split(jax.random.PRNGKey(0), 6)
    n = lambda i, shape: jax.random.normal(ks[i], shape, jnp.float32)  # noqa: E731
    unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    gates = rules.squash_gates({"lr": n(3, (b, h, t)) - 2, "momentum": n(4, (b, h, t)) + 2,
                                "retain": n(5, (b, h, t)) - 4}, 0.1)
    return unit(n(0, (b, h, t, k))), unit(n(1, (b, h, t, k))), n(2, (b, h, t, k)), gates


def _variant(fn, spec, kk, v, gates, grad: bool):
    """(jitted step, forward fn): step(ip, q) is the forward output or the outer gradients."""
    fwd = lambda ip, q: fn(spec, ip, q, kk, v, gates)[0]  # noqa: E731
    if grad:
        return jax.jit(jax.grad(lambda ip, q: jnp.sum(fwd(ip, q).astype(jnp.float32) ** 2),
                                argnums=(0, 1))), jax.jit(fwd)
    return jax.jit(fwd), jax.jit(fwd)


def run_section(variants: dict, ip, q, rounds: int) -> dict:
    """{name: {"ms", "temp_mb", "tok_s"}} for {name: (jitted step, ip, q)}, timed interleaved."""
    runs, out = {}, {}
    for name, (f, ip_, q_) in variants.items():
        compiled = f.lower(ip_, q_).compile()
        jax.block_until_ready(compiled(ip_, q_))
        runs[name] = (compiled, ip_, q_)
        out[name] = {"temp_mb": compiled.memory_analysis().temp_size_in_bytes / 2**20}
    for name, ts in interleaved_times(runs, rounds).items():
        out[name]["ms"] = 1e3 * statistics.median(ts)
        out[name]["tok_s"] = q.shape[0] * q.shape[2] / statistics.median(ts)
    return out


def _print(title: str, res: dict, ref: str | None = None) -> None:
    print(f"\n{title}")
    for name, r in res.items():
        extra = f"  speedup x{res[ref]['ms'] / r['ms']:6.1f}" if ref else ""
        if "rel_err" in r:
            extra += (f"  rel. rms err: all {r['rel_err']:.1e}, first chunk "
                      f"{r['first_chunk_err']:.1e}, last chunk {r['last_chunk_err']:.1e}")
        print(f"  {name:24s} {r['ms']:9.1f} ms  {r['tok_s']:10.0f} tok/s  "
              f"temp {r['temp_mb']:8.1f} MB{extra}", flush=True)


def flush_section(q, kk, v, c: int, grad: bool, rounds: int) -> dict:
    """Section `flush` (module doc): the fast linear form with and without the eps^2 flush."""
    b, h, t, _ = q.shape
    ks = jax.random.split(jax.random.PRNGKey(2), 2)
    gates = {"lr": jax.nn.sigmoid(jax.random.normal(ks[0], (b, h, t))),
             "log_retain": -jax.random.uniform(ks[1], (b, h, t), minval=0.5, maxval=3.0)}
    s0 = jnp.zeros((b, h) + kk.shape[-1:] + v.shape[-1:], jnp.float32)
    fns = {name: (lambda _, s, q, kk, v, g, f=f: chunk_linear_memory(
        q, kk, v, g, delta=True, chunk_size=c, flush=f,
        state=MemoryState((s,), (), jnp.zeros((b,), jnp.int32))))
        for name, f in (("flushed (default)", True), ("kept", False))}
    res = run_section({n: (_variant(f, None, kk, v, gates, grad)[0], s0, q)
                       for n, f in fns.items()}, s0, q, rounds)
    ys = {n: _variant(f, None, kk, v, gates, False)[1](s0, q) for n, f in fns.items()}
    diff = jnp.abs(ys["flushed (default)"] - ys["kept"]).max() / jnp.abs(ys["kept"]).max()
    res["flushed (default)"]["max_rel_diff"] = float(diff)
    print(f"  flushed vs kept: max |y diff| / max |y| = {float(diff):.1e}")
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sections", default=",".join(SECTIONS))
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--chunk", type=int, default=64, help="chunk of forms/remat/dtype")
    ap.add_argument("--chunks", default="16,32,64,128,256")
    ap.add_argument("--remats", default="0,1,4,16")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fwd", action="store_true", help="forward only (default: fwd + bwd)")
    ap.add_argument("--json", type=str, default="")
    args = ap.parse_args(argv)

    b, h, t, k, c = args.batch, args.heads, args.seq, args.head_dim, args.chunk
    arch = rules.make_arch("mlp", k, k, depth=2, hidden_mult=4.0, out_norm=True)
    opt = optimizers.titans(momentum=True, decay=True)
    ip = jax.vmap(lambda key: arch.init(key))(jax.random.split(jax.random.PRNGKey(1), h))
    q, kk, v, gates = _inputs(b, h, t, k)
    spec = lambda **kw: MemorySpec(arch, rules.l2, opt, **{"chunk_size": c, **kw})  # noqa: E731
    grad = not args.fwd
    mk = lambda fn, s, kk=kk, v=v, ip=ip, q=q: (_variant(fn, s, kk, v, gates, grad)[0], ip, q)  # noqa: E731,E501
    out = {"seq": t, "chunk": c, "batch": b, "heads": h, "head_dim": k,
           "mode": "fwd+bwd" if grad else "fwd", "device": jax.devices()[0].device_kind}
    print(f"{out['mode']}: B={b} H={h} T={t} K={k} MLP hidden {4 * k}, "
          f"{out['device']} x{jax.device_count()}")
    sections = args.sections.split(",")
    if "forms" in sections:
        out["forms"] = run_section({
            "chunked_closed_form": mk(memory_scan, spec()),
            "chunked_vjp_slots": mk(memory_scan, spec(manual_grads=False)),
            "chunked_read_after": mk(memory_scan, spec(read_after_write=True)),
            "chunked_general": mk(memory_scan, spec(closed_form=False)),
            "token_by_token": mk(reference_scan, spec()),
        }, ip, q, args.rounds)
        _print(f"forms at chunk {c}", out["forms"], "token_by_token")
    if "chunk" in sections:
        out["chunk"] = run_section({f"chunk {n}": mk(memory_scan, spec(chunk_size=int(n)))
                                    for n in args.chunks.split(",")}, ip, q, args.rounds)
        _print("chunk sweep (closed form)", out["chunk"])
    if "remat" in sections:
        out["remat"] = run_section({f"remat_every {n}": mk(memory_scan, spec(remat_every=int(n)))
                                    for n in args.remats.split(",")}, ip, q, args.rounds)
        _print(f"remat sweep (closed form, chunk {c})", out["remat"])
    if "dtype" in sections:
        bf = lambda x: jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), x)  # noqa: E731
        kb, vb, ipb, qb = bf(kk), bf(v), bf(ip), bf(q)
        out["dtype"] = run_section({
            "fp32": mk(memory_scan, spec()),
            "bf16 (fp32 state)": mk(memory_scan, spec(), kb, vb, ipb, qb),
        }, ip, q, args.rounds)
        f32 = lambda x: jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), x)  # noqa: E731
        fwd = lambda *a: _variant(memory_scan, spec(), a[0], a[1], gates, False)[1](a[2], a[3])  # noqa: E731,E501
        y32 = fwd(kk, v, ip, q)
        ys = {"bf16 (fp32 state)": fwd(kb, vb, ipb, qb).astype(jnp.float32),
              # fp32 arithmetic on the bf16-rounded inputs: separates the recurrence's own
              # sensitivity to input perturbations from bf16 arithmetic
              "fp32 on bf16-rounded inputs": fwd(*f32((kb, vb, ipb, qb)))}
        out["dtype"]["fp32"].update(rel_err=0.0, first_chunk_err=0.0, last_chunk_err=0.0)
        rms = lambda x: jnp.sqrt(jnp.mean(x**2))  # noqa: E731
        err = lambda y, sl: float(rms((y - y32)[:, :, sl]) / rms(y32[:, :, sl]))  # noqa: E731
        for name, y in ys.items():
            out["dtype"].setdefault(name, dict.fromkeys(("ms", "tok_s", "temp_mb"), float("nan")))
            out["dtype"][name].update(rel_err=err(y, slice(None)),
                                      first_chunk_err=err(y, slice(0, c)),
                                      last_chunk_err=err(y, slice(t - c, t)))
        _print(f"compute dtype (closed form, chunk {c}); error of the forward output", out["dtype"])
    if "flush" in sections:
        out["flush"] = flush_section(q, kk, v, c, grad, args.rounds)
        _print(f"decay flush (gated delta rule fast form, chunk {c})", out["flush"], "kept")
    if args.json:
        write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
