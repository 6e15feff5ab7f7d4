"""Read-out forms of the fast memory (PAPER.md D2, issue 16): stability of the inner loop alone.

    python benchmarks/out_norm.py                       # T=8192, both inner loops, every form
    python benchmarks/out_norm.py --seq=2048 --json=runs/out_norm.json

Forms (`model.inner` keys): `rms` x + RMSNorm(MLP(x)) (out_norm, the shipped default until this
study), `paper` x + MLP(x) (Eq. 89 as printed), `gain` x + g * RMSNorm(MLP(x)) with g a fast
weight the retention gate decays (out_gain), `clip` x + MLP(x) with every token's inner gradient
clipped to norm 1 (grad_clip), `gain+clip` both.

Inner loops, constant gates at the shipped initial values: `titans` = GD + momentum 0.9 +
retention 0.99, lr 0.01, chunk 64 (titans_lmm); `dgd` = DGD (eta' = eta/(1+eta)) + momentum 0.9 +
retention 0.99, lr 0.01, chunk 16 (HOPE's M_mem). One 2-layer residual MLP memory per head
(hidden 4K, K=64, B=1, H=2), unit keys and queries, N(0, 1) values.

Reported per form and loop:
  pert@2k, pert@T  rms(y - y_ref) / rms(y_ref) over the chunk ending at token 2048 and the last
                   chunk, y_ref = fp32 inputs, y = fp32 arithmetic on bf16-ROUNDED inputs: how much
                   the recurrence amplifies a 0.4% input perturbation (bf16 rounding) over time.
  lr 0.05 / mom 0.99  the same run with lr 0.05 (momentum 0.9), and with momentum 0.99 (lr 0.01):
                   finite, and the output's rms in the last chunk (a bounded loop stays O(1)).
  fit lr 0.01 / 0.1  does the memory still learn? Values v = k A (A fixed, random N(0, 1)),
                   queries = keys, retention off: rms(M(k) - v) / rms(v) in the last chunk
                   (~1 = nothing learnt; nan = diverged).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import write_json  # noqa: E402
from hope_jax.memory import optimizers, rules  # noqa: E402
from hope_jax.memory.scan import MemorySpec, memory_scan  # noqa: E402

FORMS = {"rms": dict(out_norm=True), "paper": dict(out_norm=False),
         "gain": dict(out_norm=True, out_gain=True), "clip": dict(out_norm=False, grad_clip=1.0),
         "gain+clip": dict(out_norm=True, out_gain=True, grad_clip=1.0)}
LOOPS = {"titans": (optimizers.titans(True, True), 64), "dgd": (optimizers.dgd(True), 16)}
STRESS = {"base": (0.01, 0.9), "lr 0.05": (0.05, 0.9), "mom 0.99": (0.01, 0.99)}


def _inputs(b, h, t, k):
    ks = jax.random.split(jax.random.PRNGKey(0), 3)
    unit = lambda x: x / jnp.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    return (unit(jax.random.normal(ks[0], (b, h, t, k))),
            unit(jax.random.normal(ks[1], (b, h, t, k))), jax.random.normal(ks[2], (b, h, t, k)))


def measure(form: dict, loop: str, t: int, b: int = 1, h: int = 2, k: int = 64) -> dict:
    opt, chunk = LOOPS[loop]
    arch = rules.make_arch("mlp", k, k, depth=2, hidden_mult=4.0, **form)
    spec = MemorySpec(arch, rules.l2, opt, chunk)
    ip = jax.vmap(lambda key: arch.init(key))(jax.random.split(jax.random.PRNGKey(1), h))
    q, kk, v = _inputs(b, h, t, k)
    run = jax.jit(lambda ip, q, kk, v, g: memory_scan(spec, ip, q, kk, v, g)[0])
    rms = lambda x: float(jnp.sqrt(jnp.mean(x ** 2)))  # noqa: E731
    out = {}
    for name, (lr, mom) in STRESS.items():
        gates = {"lr": jnp.full((b, h, t), lr), "momentum": jnp.full((b, h, t), mom),
                 "retain": jnp.full((b, h, t), 0.99)}
        y = run(ip, q, kk, v, gates)
        last = y[:, :, -chunk:]
        out[name] = {"finite": bool(jnp.all(jnp.isfinite(y))), "rms_last": rms(last)}
        if name == "base":  # fp32 arithmetic on bf16-rounded inputs vs fp32 inputs
            rnd = lambda x: jax.tree_util.tree_map(  # noqa: E731
                lambda a: a.astype(jnp.bfloat16).astype(jnp.float32), x)
            yb = run(rnd(ip), rnd(q), rnd(kk), rnd(v), gates)
            err = lambda sl, y=y, yb=yb: rms((yb - y)[:, :, sl]) / max(rms(y[:, :, sl]), 1e-30)  # noqa: E731,E501
            out["pert_first"] = err(slice(0, chunk))
            t2k = min(2048, t)
            out["pert_2k"] = err(slice(t2k - chunk, t2k))
            out["pert_last"] = err(slice(t - chunk, t))
    a = jax.random.normal(jax.random.PRNGKey(7), (k, k))  # v = k A: a map the memory can learn
    v_lin = kk @ a
    for lr in (0.01, 0.1):  # no retention: nothing to forget
        gates = {"lr": jnp.full((b, h, t), lr), "momentum": jnp.full((b, h, t), 0.9),
                 "retain": jnp.ones((b, h, t))}
        y = run(ip, kk, kk, v_lin, gates)
        out[f"fit_{lr}"] = rms((y - v_lin)[:, :, -chunk:]) / rms(v_lin[:, :, -chunk:])
    return out


def _fmt(x: float) -> str:
    return "nan" if x != x else f"{100 * x:.2f}%"


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq", type=int, default=8192)
    ap.add_argument("--forms", default=",".join(FORMS))
    ap.add_argument("--loops", default=",".join(LOOPS))
    ap.add_argument("--head-dim", type=int, default=64)
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)
    t = args.seq
    res = {"seq": t, "device": jax.devices()[0].device_kind, "rows": []}
    print(f"| loop | form | pert first chunk | pert @2k | pert @{t} | lr 0.05 | momentum 0.99 "
          "| fit lr 0.01 | fit lr 0.1 |")
    print("|---|---|---|---|---|---|---|---|---|")
    for loop in args.loops.split(","):
        for name in args.forms.split(","):
            m = measure(FORMS[name], loop, t, k=args.head_dim)
            res["rows"].append({"loop": loop, "form": name, **m})
            st = lambda s, m=m: (f"finite, rms {m[s]['rms_last']:.2f}"  # noqa: E731
                                 if m[s]["finite"] else "NaN/inf")
            print(f"| {loop} | {name} | {_fmt(m['pert_first'])} | {_fmt(m['pert_2k'])} | "
                  f"{_fmt(m['pert_last'])} | {st('lr 0.05')} | {st('mom 0.99')} | "
                  f"{m['fit_0.01']:.3f} | {m['fit_0.1']:.3f} |",
                  flush=True)
    if args.json:
        write_json(args.json, res)
    return res


if __name__ == "__main__":
    main()
