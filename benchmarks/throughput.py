"""Train-step throughput, memory and MFU: Transformer++ vs Titans (LMM) vs HOPE at equal size.

    python benchmarks/throughput.py                                   # preset s, T = 512 ... 32k
    python benchmarks/throughput.py --preset=xs --seqs=512,4096 --json=/tmp/t.json --png=/tmp/t.png
    python benchmarks/throughput.py --dtype=bfloat16 --peak-tflops=989   # e.g. on one H100
    python benchmarks/throughput.py --set=model.remat=block            # rematerialise blocks
    python benchmarks/throughput.py --seqs=4096 \
        --variant='hope_local:hope:model.hope.cms_signal=local' \
        --variant='hope_static_cms:hope:model.hope.cms_periods=(0,)'       # where HOPE's time goes

The three models are the equal-parameter triples of `benchmarks/study.py` (`--preset`: configs
`transformer_tiny`, `titans_tiny`, `hope_small` with the preset's width, depth and FFN sizes; the
models only, data settings are ignored). At every context length T each model's step (`jax.grad`
of the next-token loss on [batch, T] tokens, jitted; the optimizer update is left out, it is the
same elementwise pass for all) is compiled ahead of time, then all models are timed side by side
in interleaved rounds (medians), so machine noise hits them alike, and each is reported as a
ratio to Transformer++ at the same T.

Memory: XLA's compiled estimate (arguments + outputs + temporaries; `temp` alone is the activation
memory) on every backend, plus the allocator's peak on GPU/TPU (`memory_stats`). A model whose
estimate exceeds --max-gb is compiled but not run. Fast-state memory is counted from the model's
shapes: per sequence, every fast memory's weights (+ momentum) and every in-context CMS level.
MFU = model FLOPs / step time / peak, with model FLOPs by the PaLM convention: 6 x matmul
parameters x tokens + 6 x layers x T x d per token for causal attention. The inner loops' own work
(reading and writing fast memories) is not counted, so HOPE's and Titans' MFU understate the
hardware's use. Peak: --peak-tflops, else a table of known accelerators (dense bf16); on CPU MFU is
left out and achieved TFLOP/s is printed.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import compiled_grad_step, interleaved_times, write_json  # noqa: E402,E501
from benchmarks.study import PRESETS, parse_set  # noqa: E402
from hope_jax.config import Config, replace  # noqa: E402
from hope_jax.models.lm import model_spec  # noqa: E402
from hope_jax.param_count import load_config_file  # noqa: E402
from hope_jax.train.state import abstract_variables  # noqa: E402

LABELS = {"configs/transformer_tiny.py": "transformer", "configs/titans_tiny.py": "titans_lmm",
          "configs/hope_small.py": "hope"}
# dense bf16 peak TFLOP/s of one device, by substring of jax's device_kind
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L4": 121.0, "TPU v5 lite": 197.0,
               "TPU v5e": 197.0, "TPU v5p": 459.0, "TPU v4": 275.0, "TPU v6": 918.0}


def model_configs(preset: str, dtype: str, extra: dict | None = None) -> dict:
    """{label: ModelConfig} of the preset's equal-size triple (+ `extra` model.* overrides)."""
    common, per_cfg = PRESETS[preset]
    out = {}
    for path, over in per_cfg.items():
        keys = {k: v for k, v in {**common, **over, **(extra or {})}.items()
                if k.startswith("model.")}
        out[LABELS[path]] = replace(load_config_file(path), **keys, **{"model.dtype": dtype}).model
    return out


def with_variants(cfgs: dict, variants: list[str]) -> dict:
    """`cfgs` plus one model per --variant 'label:base:key=value;key=value' (base: a key of
    `cfgs`, the keys applied on top of it)."""
    cfgs = dict(cfgs)
    for spec in variants:
        label, base, sets = (spec.split(":", 2) + ["", ""])[:3]
        if base not in cfgs:
            raise SystemExit(f"--variant {spec!r}: base must be one of {list(cfgs)}")
        over = parse_set([x for x in sets.split(";") if x])
        cfgs[label] = replace(Config(model=cfgs[base]), **over).model
    return cfgs


@functools.cache
def _leaves(cfg):
    """(path, ShapeDtypeStruct) of every parameter; one `eval_shape` per model config (HOPE's
    takes seconds, and every sequence length asks for it twice)."""
    params = abstract_variables(Config(model=cfg))["params"]
    return jax.tree_util.tree_flatten_with_path(nn.unbox(params))[0]


def fast_state_bytes(cfg, batch: int) -> int:
    """Bytes of the per-sequence fast state carried along the sequence (f32): every fast memory's
    weights (`*mem_w*` leaves, the meta-learned initial state) with a momentum copy when the rule
    has momentum, and every CMS level that is updated in context (ntp / local signal)."""
    hc = cfg.hope
    dynamic = {f"cms_{i}" for i, p in enumerate(hc.cms_periods) if p and hc.cms_signal != "outer"}
    momentum = cfg.inner.momentum
    total = 0
    for path, x in _leaves(cfg):
        keys = [getattr(p, "key", "") for p in path]
        if any("mem_w" in str(k) for k in keys):
            total += x.size * (2 if momentum else 1)
        elif any(k in dynamic for k in keys):
            total += x.size
    return 4 * total * batch


def model_flops_per_token(cfg, seq: int) -> float:
    """6 x matmul parameters (embedding lookup excluded, lm head included) + causal attention."""
    n = 0
    for path, x in _leaves(cfg):
        keys = [str(getattr(p, "key", "")) for p in path]
        if "embed" in keys and cfg.tie_embeddings:
            n += x.size  # the tied lm head is a matmul
        elif "embed" not in keys and x.ndim >= 2:
            n += x.size
    attn = 6 * cfg.num_layers * seq * cfg.d_model if model_spec(cfg).full_attention else 0
    return 6.0 * n + attn


def peak_flops(arg: float) -> float | None:
    if arg:
        return arg * 1e12
    kind = jax.devices()[0].device_kind
    return next((v * 1e12 for k, v in PEAK_TFLOPS.items() if k.lower() in kind.lower()), None)


def _device_peak_gb() -> float | None:
    stats = jax.devices()[0].memory_stats() or {}
    return stats["peak_bytes_in_use"] / 2**30 if "peak_bytes_in_use" in stats else None


def plot(results: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    for label in dict.fromkeys(r["model"] for r in results):
        rs = [r for r in results if r["model"] == label]
        ran = [r for r in rs if "tok_s" in r]
        if ran:
            axes[0].plot([r["seq"] for r in ran], [r["tok_s"] for r in ran], marker="o",
                         label=label)
        axes[1].plot([r["seq"] for r in rs], [r["temp_gb"] for r in rs], marker="o", label=label)
        axes[2].plot([r["seq"] for r in rs], [r["fast_state_mb"] for r in rs], marker="o",
                     label=label)
    for ax, ylabel in zip(axes, ("train tokens/s", "activation memory (XLA temp, GB)",
                                 "fast state per batch (MB)")):
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context length T")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    axes[1].set_yscale("log")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="s", choices=tuple(PRESETS))
    ap.add_argument("--seqs", default="512,1024,2048,4096,8192,16384,32768")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--set", action="append", default=[],
                    help="model.key=value for every model, e.g. model.remat=block")
    ap.add_argument("--variant", action="append", default=[],
                    help="extra model 'label:base:key=value;key=value' from base (transformer, "
                         "titans_lmm or hope), e.g. 'hope_local:hope:model.hope.cms_signal=local'")
    ap.add_argument("--max-gb", type=float, default=12.0)
    ap.add_argument("--peak-tflops", type=float, default=0.0)
    ap.add_argument("--json", default="runs/throughput.json")
    ap.add_argument("--png", default="runs/throughput.png")
    args = ap.parse_args(argv)

    cfgs = with_variants(model_configs(args.preset, args.dtype, parse_set(args.set)),
                         args.variant)
    peak = peak_flops(args.peak_tflops)
    dev = jax.devices()[0]
    results = []
    for seq in (int(s) for s in args.seqs.split(",")):
        runs = {}
        for label, cfg in cfgs.items():
            t0 = time.perf_counter()
            compiled, params, toks, gb, n = compiled_grad_step(cfg, args.batch, seq)
            mem = compiled.memory_analysis()
            r = {"seq": seq, "model": label, "params": n, "est_gb": gb,
                 "temp_gb": mem.temp_size_in_bytes / 2**30,
                 "fast_state_mb": fast_state_bytes(cfg, args.batch) / 2**20,
                 "compile_s": time.perf_counter() - t0}
            if gb <= args.max_gb:
                jax.block_until_ready(compiled(params, toks))
                runs[label] = (compiled, params, toks)
                r["device_peak_gb"] = _device_peak_gb()
            print(f"T={seq:6d} {label:12s} params {n / 1e6:.3f}M  est. {gb:7.2f} GB "
                  f"(temp {r['temp_gb']:7.2f})  fast state {r['fast_state_mb']:6.2f} MB  "
                  f"compile {r['compile_s']:5.1f}s" + ("" if label in runs else "  (skipped)"),
                  flush=True)
            results.append(r)
            del compiled
        times = interleaved_times(runs, args.rounds)
        base = statistics.median(times["transformer"]) if "transformer" in times else None
        for r in results:
            if r["seq"] != seq or r["model"] not in times:
                continue
            r["step_s"] = statistics.median(times[r["model"]])
            r["tok_s"] = args.batch * seq / r["step_s"]
            r["model_tflops"] = model_flops_per_token(cfgs[r["model"]], seq) * args.batch * seq \
                / r["step_s"] / 1e12
            if peak:
                r["mfu"] = r["model_tflops"] * 1e12 / peak
            if base:
                r["throughput_vs_transformer"] = base / r["step_s"]
            print(f"T={seq:6d} {r['model']:12s} {r['step_s'] * 1e3:10.1f} ms/step "
                  f"{r['tok_s']:9.0f} tok/s  {r['model_tflops']:.4f} TFLOP/s"
                  + (f"  MFU {100 * r['mfu']:.1f}%" if peak else "")
                  + (f"  x{r['throughput_vs_transformer']:.2f} of Transformer++" if base else ""),
                  flush=True)
    print(f"device: {dev.device_kind} ({dev.platform}) x{jax.device_count()}, preset "
          f"{args.preset}, batch {args.batch}, {args.dtype}, overrides {args.set}")
    # activation memory per token: constant in T <=> linear in length
    for label in cfgs:
        rs = [r for r in results if r["model"] == label]
        per_tok = [r["temp_gb"] * 2**30 / (r["seq"] * args.batch) / 2**10 for r in rs]
        print(f"{label:12s} activation KiB/token by T: "
              + " ".join(f"{r['seq']}:{v:.1f}" for r, v in zip(rs, per_tok))
              + f"  fast state {rs[0]['fast_state_mb']:.2f} MB at every T")
    out = {"device": dev.device_kind, "platform": dev.platform, "preset": args.preset,
           "overrides": args.set,
           "batch": args.batch, "dtype": args.dtype, "peak_tflops": peak and peak / 1e12,
           "date": time.strftime("%Y-%m-%d"), "results": results}
    if args.json:
        write_json(args.json, out)
    if args.png:
        Path(args.png).parent.mkdir(parents=True, exist_ok=True)
        plot(results, args.png)
        print(f"wrote {args.json} and {args.png}")
    return out


if __name__ == "__main__":
    main()
