"""Per-token decode latency of HOPE: recurrent decoding (carried state) vs exact recompute.

    python benchmarks/decode_latency.py                              # hope_small, 1k and 4k context
    python benchmarks/decode_latency.py --contexts 1024 --set model.hope.cms_signal=outer

For each context length L: the prompt of L tokens is prefilled into a `models/decode.py`
`Decoder` (committed chunks), then `--tokens` tokens are fed one at a time (median ms/token over
them, after one warm-up step; chunk commits included). The recompute path is `eval/sample.py`'s
fallback: one causal forward over the whole (L + 1)-token buffer per generated token (median of
`--repeats` forwards after compilation). Prints ms/token for both and the ratio, writes JSON.
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
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.study import parse_set  # noqa: E402
from hope_jax.config import replace  # noqa: E402
from hope_jax.eval.sample import buffer_len  # noqa: E402
from hope_jax.models.decode import Decoder, decode_chunk  # noqa: E402
from hope_jax.models.lm import LM  # noqa: E402
from hope_jax.param_count import load_config_file  # noqa: E402


def _ms(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times)


def measure(cfg, context: int, tokens: int, repeats: int, init_len: int) -> dict:
    model = LM(cfg)
    # init at the training length: with in-context CMS the params live under the segment body
    params = jax.jit(model.init)(jax.random.key(0), jnp.zeros((1, init_len), jnp.int32))["params"]
    rng = np.random.default_rng(0)
    prompt = rng.integers(0, cfg.vocab_size, (1, context + tokens + 64)).astype(np.int32)
    dec = Decoder(cfg, params, max_len=context + tokens + 1)
    t0 = time.perf_counter()
    logits, st = dec.prefill(dec.init(1), prompt[:, :context])
    jax.block_until_ready(logits)
    prefill_s = time.perf_counter() - t0
    _, st = dec.step(st, prompt[:, context])  # warm-up (compiles the step)
    times = []
    for i in range(tokens):
        t0 = time.perf_counter()
        lg, st = dec.step(st, prompt[:, context + 1 + i])
        jax.block_until_ready(lg)
        times.append(1e3 * (time.perf_counter() - t0))
    # the recompute buffer: L + 1 tokens, rounded up to a multiple of an ntp segment
    buf = jnp.asarray(prompt[:, : buffer_len(cfg, context + 1)])
    fwd = jax.jit(lambda p, x: model.apply({"params": p}, x)[:, -1])
    jax.block_until_ready(fwd(params, buf))  # compile
    recompute = _ms(lambda: fwd(params, buf), repeats)
    decode = statistics.median(times)
    return {"context": context, "decode_ms_per_token": decode, "recompute_ms_per_token": recompute,
            "speedup": recompute / decode, "prefill_s": prefill_s, "tokens_timed": tokens,
            "chunk": dec.chunk}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="configs/hope_small.py")
    ap.add_argument("--contexts", default="1024,4096")
    ap.add_argument("--tokens", type=int, default=32, help="decode steps timed per context")
    ap.add_argument("--repeats", type=int, default=3, help="recompute forwards timed")
    ap.add_argument("--set", action="append", default=[], help="model.key=value override")
    ap.add_argument("--json", default="docs/results/decode_latency.json")
    args = ap.parse_args(argv)
    full = replace(load_config_file(args.config), **parse_set(args.set))
    cfg = full.model
    if not decode_chunk(cfg):
        raise SystemExit(f"{args.config} with {args.set} cannot decode recurrently")
    rows = []
    for ctx in (int(c) for c in args.contexts.split(",")):
        r = measure(cfg, ctx, args.tokens, args.repeats, full.data.seq_len)
        rows.append(r)
        print(f"L={ctx:5d}  decode {r['decode_ms_per_token']:8.2f} ms/token  recompute "
              f"{r['recompute_ms_per_token']:9.2f} ms/token  ratio {r['speedup']:7.1f}x  "
              f"(chunk {r['chunk']}, prefill {r['prefill_s']:.1f} s)", flush=True)
    out = {"config": args.config, "set": args.set, "device": jax.devices()[0].device_kind,
           "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "rows": rows}
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
