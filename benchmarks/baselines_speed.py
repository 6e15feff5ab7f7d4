"""Train-step throughput of the paper's baselines vs Transformer++ (issue 9), as ratios.

    python benchmarks/baselines_speed.py                                   # T = 2048, 8192
    python benchmarks/baselines_speed.py --seqs 2048 --models deltanet,ttt_mlp --json /tmp/b.json

Every model: the same width, depth and heads (default d=128, 2 layers, 4 heads), SwiGLU FFN of
the default width, byte vocabulary, fp32, `hope_jax.models.lm.LM` with nn.scan over layers.
Linear members run their fast chunked form (chunk 64; `model.baseline.impl=fast`); TTT its
mini-batch of 16 (remat every 4 chunks); Samba layers/2 (Mamba2 + MLP, SWA + MLP) units (the
same number of mixer layers) with a 2048-token window. The step is `jax.grad` of the next-token
cross-entropy (forward + backward, jitted; the optimizer update, the same for all, is left out),
timed as the median of interleaved rounds after compilation. A step whose XLA memory estimate
exceeds --max-gb is compiled but not run. Prints tokens/s and the ratio to Transformer++ in the
same run.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import compiled_grad_step, interleaved_times  # noqa: E402
from hope_jax.config import validate  # noqa: E402
from hope_jax.models.lm import MODELS as REGISTRY  # noqa: E402

MODELS = {
    "transformer": {},
    "linear_attention": {"inner": {"chunk_size": 64}},
    "retnet": {"inner": {"chunk_size": 64}},
    "mamba2": {"inner": {"chunk_size": 64}, "baseline": {"ssm_state": 64}},
    "deltanet": {"inner": {"chunk_size": 64}},
    "gated_deltanet": {"inner": {"chunk_size": 64}},
    "ttt_linear": {"inner": {"chunk_size": 16, "remat_every": 4}},
    "ttt_mlp": {"inner": {"chunk_size": 16, "remat_every": 4}},
    "samba": {"inner": {"chunk_size": 64}, "memory": {"window": 2048},
              "baseline": {"ssm_state": 64}},
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seqs", type=str, default="2048,8192")
    ap.add_argument("--models", type=str, default=",".join(MODELS))
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--d-model", type=int, default=128)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-gb", type=float, default=12.0)
    ap.add_argument("--json", type=str, default="")
    args = ap.parse_args(argv)
    names = [m for m in args.models.split(",") if m]
    if "transformer" not in names:
        names.insert(0, "transformer")

    results = []
    for seq in (int(s) for s in args.seqs.split(",")):
        runs = {}
        for name in names:
            model = {"name": name, "vocab_size": 257, "d_model": args.d_model,
                     "num_layers": args.layers, "num_heads": args.heads, "dtype": "float32"}
            per_block = REGISTRY[name].layers_per_block  # Samba: Mamba2 + MLP, SWA + MLP
            model["num_layers"] = max(1, args.layers // per_block)
            cfg = validate({"model": model | MODELS[name]}).model
            t0 = time.perf_counter()
            compiled, params, toks, gb, n = compiled_grad_step(cfg, args.batch, seq)
            info = {"seq": seq, "model": name, "params": n, "est_gb": gb,
                    "compile_s": time.perf_counter() - t0}
            if gb <= args.max_gb:
                jax.block_until_ready(compiled(params, toks))
                runs[name] = (compiled, params, toks)
            print(f"T={seq:5d} {name:16s} params {n / 1e6:.3f}M  est. memory {gb:6.2f} GB  "
                  f"compile {info['compile_s']:.1f}s" + ("" if gb <= args.max_gb else
                                                         "  (skipped)"), flush=True)
            results.append(info)
        times = interleaved_times(runs, args.rounds)
        base = statistics.median(times["transformer"]) if "transformer" in times else None
        for r in results:
            if r["seq"] == seq and r["model"] in times:
                r["step_s"] = statistics.median(times[r["model"]])
                r["tok_s"] = args.batch * seq / r["step_s"]
                if base:
                    r["ratio_vs_transformer"] = base / r["step_s"]
                ratio = r.get("ratio_vs_transformer")
                print(f"T={seq:5d} {r['model']:16s} {r['step_s'] * 1e3:9.1f} ms/step "
                      f"{r['tok_s']:9.0f} tok/s" + ("" if ratio is None else
                                                   f"  {ratio:5.2f}x Transformer++"), flush=True)
    dev = jax.devices()[0]
    print(f"device: {dev.device_kind} ({dev.platform}) x{jax.device_count()}, batch {args.batch}, "
          f"d={args.d_model}, layers={args.layers}, heads={args.heads}")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": dev.device_kind, "args": vars(args),
                                               "results": results}, indent=2))


if __name__ == "__main__":
    main()
