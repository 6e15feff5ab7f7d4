"""One-device GPU check: the 760M Transformer++ / Titans / HOPE train steps at 4k context in bf16.

    bash benchmarks/gpu_check.sh                       # on the GPU machine (wraps this file)
    python benchmarks/gpu_check.py --tiny --out=/tmp/g # CPU smoke test: *_tiny configs, T=256

Per model (configs/{transformer,titans,hope}_760m.py, model.dtype=bfloat16, T=4096, one
sequence per micro-batch, `--grad-accum` micro-batches per step) the real train step
(`hope_jax.train.step.jit_train_step`: forward + backward + optimizer update, state donated) is
compiled ahead of time; if XLA's estimate (arguments + outputs - donated + temporaries) exceeds
the device (`bytes_limit`, or --max-gb) the numbers are recorded and it is not run; else it runs
--warmup steps, then --steps timed steps (median). Reported: compile seconds, step time, tokens/s,
the allocator's peak (`peak_bytes_in_use`), MFU (PaLM-convention model FLOPs, see
benchmarks/throughput.py, over the device's dense bf16 peak) and the attention kernel chosen.

Every model runs in its own subprocess under its own timeout (min(--timeout, what is left of
--budget)), so an OOM, a crash or a compile that never ends costs only that model: it is
recorded as `compile timeout` / `run timeout` / `crashed` with the child's last lines.
Writes gpu_check.json to --out (default $OUT, else runs/gpu_check).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MODELS = ("transformer", "titans", "hope")
CPU_ONLY = ("jax here runs on {backend} only: install a GPU jax first, e.g. "
            "`pip install -U \"jax[cuda12]\"` (the device machine has no internet: carry a venv "
            "that has it), or pass --tiny for the CPU smoke test")


def _config(name: str, args):
    from benchmarks.study import parse_set
    from hope_jax.config import replace
    from hope_jax.param_count import load_config_file

    path = ROOT / "configs" / f"{name}_{'tiny' if args.tiny else '760m'}.py"
    return replace(load_config_file(str(path)), **parse_set(args.set), **{
        "model.dtype": args.dtype, "data.seq_len": args.seq,
        "data.batch_size": args.micro_batch * args.grad_accum,
        "optim.grad_accum": args.grad_accum, "mesh.data": 1, "mesh.fsdp": 1, "mesh.tensor": 1})


def _stage(path: str, stage: str) -> None:
    Path(path).write_text(stage)


def child(name: str, args, result_path: str) -> dict:
    """Compile, size, and (if it fits) time one model; writes its record to `result_path`."""
    import jax
    import numpy as np

    from benchmarks.common import compiled_train_step
    from benchmarks.throughput import _device_peak_gb, model_flops_per_token, peak_flops
    from hope_jax import sharding
    from hope_jax.nn.attention_kernels import resolve_impl
    from hope_jax.train.state import init_state

    stage_path = result_path + ".stage"
    cfg = _config(name, args)
    dev = jax.devices()[0]
    limit = (dev.memory_stats() or {}).get("bytes_limit")
    max_gb = args.max_gb or (limit / 2**30 if limit else 64.0)
    b, t = cfg.data.batch_size, cfg.data.seq_len
    rec = {"model": name, "config": f"configs/{name}_{'tiny' if args.tiny else '760m'}.py",
           "seq": t, "micro_batch": args.micro_batch, "grad_accum": args.grad_accum,
           "dtype": cfg.model.dtype, "remat": cfg.model.remat,
           "attn_impl": cfg.model.attn_impl,
           "attn_resolved": resolve_impl(cfg.model.attn_impl, cfg.model.dtype,
                                         cfg.model.head_dim, t),
           "max_gb": max_gb, "device_limit_gb": limit and limit / 2**30}
    _stage(stage_path, "compile")
    t0 = time.perf_counter()
    compiled, model, tx, mesh, _, _, ma = compiled_train_step(cfg)
    rec["compile_s"] = time.perf_counter() - t0
    if ma is not None:  # donated state aliases its outputs (as benchmarks/memory_plan.py)
        est = (ma.argument_size_in_bytes + ma.output_size_in_bytes - ma.alias_size_in_bytes
               + ma.temp_size_in_bytes)
        rec.update(est_gb=est / 2**30, temp_gb=ma.temp_size_in_bytes / 2**30,
                   argument_gb=ma.argument_size_in_bytes / 2**30)
    if rec.get("est_gb", 0.0) > max_gb:
        rec["status"] = "over memory"
        return rec
    _stage(stage_path, "run")
    toks = (np.arange(b * (t + 1)).reshape(b, t + 1) * 7919 % cfg.model.vocab_size)
    host = {"inputs": toks[:, :-1], "targets": toks[:, 1:],
            "positions": np.broadcast_to(np.arange(t), (b, t)),
            "segment_ids": np.ones((b, t), np.int32), "mask": np.ones((b, t), np.float32)}
    with sharding.mesh_context(mesh):
        batch = sharding.place_batch({k: np.asarray(v, np.float32 if k == "mask" else np.int32)
                                      for k, v in host.items()}, mesh)
        state = init_state(cfg, model, tx, mesh)
        rec["params"] = int(sum(x.size for x in jax.tree.leaves(state.params)))
        times, losses = [], []
        for i in range(args.warmup + args.steps):
            t1 = time.perf_counter()
            state, metrics = compiled(state, batch)
            jax.block_until_ready((state, metrics))
            if i >= args.warmup:
                times.append(time.perf_counter() - t1)
            losses.append(float(metrics["loss"]))
    step = statistics.median(times)
    flops = model_flops_per_token(cfg.model, t) * b * t
    peak = peak_flops(args.peak_tflops)
    rec.update(status="ok", step_s=step, step_times_s=times, losses=losses,
               tok_s=b * t / step, model_tflops=flops / step / 1e12,
               mfu=peak and flops / step / peak, device_peak_gb=_device_peak_gb())
    return rec


def _summary(r: dict) -> str:
    head = f"{r['model']:12s} {r.get('status', '?'):16s}"
    if "est_gb" in r:
        head += (f" est {r['est_gb']:8.2f} GB (temp {r['temp_gb']:8.2f})"
                 f" compile {r['compile_s']:6.1f}s")
    if r.get("status") == "ok":
        head += f"  {r['step_s'] * 1e3:9.1f} ms/step {r['tok_s']:9.0f} tok/s"
        head += f"  peak {r['device_peak_gb']:.2f} GB" if r["device_peak_gb"] else ""
        head += f"  MFU {100 * r['mfu']:.1f}%" if r["mfu"] else ""
    if r.get("error"):
        head += f"  ({r['error']})"
    return head


def _run_child(name: str, argv: list[str], timeout: float) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        res = os.path.join(tmp, "r.json")
        t0 = time.perf_counter()
        cmd = [sys.executable, __file__, f"--child={name}", f"--child-out={res}", *argv]
        try:
            p = subprocess.run(cmd, timeout=timeout, capture_output=True, text=True)
            tail, rc = (p.stdout + p.stderr)[-1500:], p.returncode
        except subprocess.TimeoutExpired as e:
            out = (e.stdout or b"") + (e.stderr or b"")
            tail, rc = (out.decode() if isinstance(out, bytes) else out)[-1500:], None
        stage = Path(res + ".stage").read_text() if os.path.exists(res + ".stage") else "start"
        if os.path.exists(res):
            r = json.loads(Path(res).read_text())
        elif rc is None:
            r = {"model": name, "status": f"{stage} timeout", "timeout_s": timeout}
        else:
            r = {"model": name, "status": "crashed", "stage": stage, "returncode": rc,
                 "error": tail.strip().splitlines()[-1] if tail.strip() else ""}
        if "status" not in r or r["status"] != "ok":
            r["log_tail"] = tail
        r["wall_s"] = time.perf_counter() - t0
        return r


def _probe(peak_tflops: float) -> dict:
    """Device kind, jax / jaxlib versions and peak FLOP/s, asked of a short subprocess so that
    this process never holds the accelerator (its children need all of its memory)."""
    code = ("import json, sys, jax, jaxlib; sys.path.insert(0, sys.argv[1]); "
            "from benchmarks.throughput import peak_flops; d = jax.devices()[0]; "
            "p = peak_flops(float(sys.argv[2])); print(json.dumps({'device_kind': d.device_kind,"
            " 'platform': d.platform, 'device_count': jax.device_count(), "
            "'jax': jax.__version__, 'jaxlib': jaxlib.__version__, "
            "'peak_tflops': p and p / 1e12}))")
    p = subprocess.run([sys.executable, "-c", code, str(ROOT), str(peak_tflops)],
                       capture_output=True, text=True, timeout=180)
    if p.returncode:
        raise SystemExit(f"error: jax does not start here:\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--tiny", action="store_true",
                    help="CPU smoke test: the *_tiny configs, float32, T=256, 2 steps")
    ap.add_argument("--seq", type=int, default=0, help="context length (default 4096; tiny 256)")
    ap.add_argument("--dtype", default="", help="model.dtype (default bfloat16; tiny float32)")
    ap.add_argument("--set", action="append", default=[],
                    help="key=value for every model's config, e.g. model.remat=block")
    ap.add_argument("--micro-batch", type=int, default=1)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--steps", type=int, default=0, help="timed steps (default 5; tiny 2)")
    ap.add_argument("--max-gb", type=float, default=0.0,
                    help="run only if XLA's estimate is below (default: the device's limit)")
    ap.add_argument("--peak-tflops", type=float, default=0.0)
    ap.add_argument("--timeout", type=float, default=200.0, help="seconds per model")
    ap.add_argument("--budget", type=float, default=450.0, help="seconds for all models")
    ap.add_argument("--out", default=os.environ.get("OUT") or "runs/gpu_check")
    ap.add_argument("--child", default="", help=argparse.SUPPRESS)
    ap.add_argument("--child-out", default="", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.seq = args.seq or (256 if args.tiny else 4096)
    args.dtype = args.dtype or ("float32" if args.tiny else "bfloat16")
    args.steps = args.steps or (2 if args.tiny else 5)
    if args.child:
        rec = child(args.child, args, args.child_out)
        Path(args.child_out).write_text(json.dumps(rec, default=float))
        return rec

    probe = _probe(args.peak_tflops)
    if probe["platform"] == "cpu" and not args.tiny:
        raise SystemExit("error: " + CPU_ONLY.format(backend=probe["platform"]))
    names = [m for m in args.models.split(",") if m]
    bad = [m for m in names if m not in MODELS]
    if bad:
        raise SystemExit(f"error: --models {bad}: choose from {MODELS}")
    passthrough = ["--tiny"] * args.tiny + [f"--set={x}" for x in args.set] + [
        f"--{k.replace('_', '-')}={getattr(args, k)}" for k in (
            "seq", "dtype", "micro_batch", "grad_accum", "warmup", "steps", "max_gb",
            "peak_tflops")]
    out = {**probe, "seq": args.seq, "dtype": args.dtype, "micro_batch": args.micro_batch,
           "grad_accum": args.grad_accum, "date": time.strftime("%Y-%m-%d %H:%M:%S"),
           "results": []}
    print(f"device {probe['device_kind']} ({probe['platform']}), jax {probe['jax']}, "
          f"T={args.seq}, {args.dtype}, micro-batch {args.micro_batch} x accum "
          f"{args.grad_accum}", flush=True)
    t_start = time.perf_counter()
    for name in names:
        left = args.budget - (time.perf_counter() - t_start)
        if left < 10:
            out["results"].append({"model": name, "status": "skipped (budget spent)"})
        else:
            out["results"].append(_run_child(name, passthrough, min(args.timeout, left)))
        print(_summary(out["results"][-1]), flush=True)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    path = Path(args.out) / "gpu_check.json"
    path.write_text(json.dumps(out, indent=2, default=float))
    print(f"wrote {path}")
    return out


if __name__ == "__main__":
    main()
