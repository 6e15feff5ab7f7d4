"""Titans LMM vs Transformer++ train-step throughput and memory at equal size (DESIGN §6).

    python benchmarks/titans_vs_transformer.py                     # T = 512, 2048, 8192
    python benchmarks/titans_vs_transformer.py --seqs 2048 --remat block --json /tmp/tvt.json

Both models: d=256, 4 layers, 4 heads (head dim 64), batch 4, fp32, byte vocabulary (257),
`hope_jax.models.lm.LM` with nn.scan over layers. Titans LMM uses the library defaults (2-layer
MLP memory per head, hidden 4x, chunk 64, momentum + forget gate, token gates, remat every 4
chunks, document resets on) with its FFN narrowed to 448 so both have ~the same parameter count.
The step is `jax.grad` of the next-token cross-entropy (forward + backward, jitted); the optimizer
update is left out (it is the same for both). Times are medians over interleaved rounds after
compilation. Memory is XLA's compiled estimate (arguments + outputs + temporaries); a step whose
estimate exceeds --max-gb is compiled but not run.
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

MODELS = {
    "transformer": {"name": "transformer"},
    "titans_lmm": {"name": "titans_lmm", "mlp_hidden": 448, "inner": {"chunk_size": 64}},
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seqs", type=str, default="512,2048,8192")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--remat", type=str, default="none", choices=("none", "block"))
    ap.add_argument("--max-gb", type=float, default=10.0)
    ap.add_argument("--json", type=str, default="")
    args = ap.parse_args(argv)

    results = []
    for seq in (int(s) for s in args.seqs.split(",")):
        runs = {}
        for label, over in MODELS.items():
            model = {"vocab_size": 257, "d_model": 256, "num_layers": 4, "num_heads": 4,
                     "dtype": "float32", "remat": args.remat} | over
            cfg = validate({"model": model}).model
            t0 = time.perf_counter()
            compiled, params, toks, gb, n = compiled_grad_step(cfg, args.batch, seq)
            info = {"params": n, "est_gb": gb, "compile_s": time.perf_counter() - t0}
            if gb <= args.max_gb:
                jax.block_until_ready(compiled(params, toks))
                runs[label] = (compiled, params, toks)
            print(f"T={seq:5d} {label:12s} params {n / 1e6:.3f}M  est. memory {gb:6.2f} GB  "
                  f"compile {info['compile_s']:.1f}s"
                  + ("" if gb <= args.max_gb else "  (skipped)"),
                  flush=True)
            results.append({"seq": seq, "model": label, **info})
        times = interleaved_times(runs, args.rounds)
        for r in results:
            if r["seq"] == seq and r["model"] in times:
                r["step_s"] = statistics.median(times[r["model"]])
                r["tok_s"] = args.batch * seq / r["step_s"]
                print(f"T={seq:5d} {r['model']:12s} {r['step_s'] * 1e3:9.1f} ms/step  "
                      f"{r['tok_s']:9.0f} tok/s", flush=True)
        if len(times) == 2:
            ratio = statistics.median(times["transformer"]) / statistics.median(times["titans_lmm"])
            print(f"T={seq:5d} Titans LMM / Transformer++ throughput: {ratio:.2f}x", flush=True)
            for r in results:
                if r["seq"] == seq:
                    r["ratio_vs_transformer"] = ratio
    dev = jax.devices()[0]
    print(f"device: {dev.device_kind} ({dev.platform}) x{jax.device_count()}, remat={args.remat}")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": dev.device_kind, "remat": args.remat,
                                               "batch": args.batch, "results": results}, indent=2))


if __name__ == "__main__":
    main()
