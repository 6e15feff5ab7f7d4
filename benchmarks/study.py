"""Small-scale study: train several configs on the same data, tokens and optimizer; compare.

    python benchmarks/study.py                                    # the three tiny configs
    python benchmarks/study.py --steps=100 --seeds=0,1 --out=runs/study
    python benchmarks/study.py --configs=configs/hope_small.py,configs/transformer_tiny.py \
        --set=model.d_model=64 --set=train.steps=50

Each (config, seed) trains with `hope_jax.train.loop.train` in its own workdir under --out
(an existing finished run is reused, an interrupted one resumes), with the overrides of --set and
--steps applied to every config alike. Prints a table of final validation loss / perplexity,
train loss, parameter count and wall time, with each model's validation loss relative to the
first config's, and writes `study.json` and `study.png` (validation and train loss curves).
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402

from hope_jax.config import replace  # noqa: E402
from hope_jax.param_count import load_config_file  # noqa: E402
from hope_jax.train.state import param_count  # noqa: E402

TINY = ("configs/transformer_tiny.py", "configs/titans_tiny.py", "configs/hope_tiny.py")


def _parse_set(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if not _:
            raise SystemExit(f"--set expects key=value, got {item!r}")
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value  # a bare string
    return out


def _curves(workdir: str) -> dict:
    train, val = [], []
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if "train/loss" in rec:
                train.append((rec["step"], rec["train/loss"]))
            if "val/loss" in rec:
                val.append((rec["step"], rec["val/loss"]))
    return {"train": train, "val": val}


def run_one(path: str, seed: int, overrides: dict, out: str) -> dict:
    from hope_jax.train.loop import train

    cfg = load_config_file(path)
    cfg = replace(cfg, **{"data.seed": seed, "train.seed": seed, **overrides})
    name = f"{Path(path).stem}_s{seed}"
    workdir = os.path.join(out, name)
    t0 = time.perf_counter()
    summary = train(cfg, workdir)
    return {"config": path, "model": cfg.model.name, "seed": seed, "workdir": workdir,
            "params": param_count(cfg), "val_loss": summary.get("val_loss"),
            "train_loss": summary.get("train_loss"), "steps": summary.get("step"),
            "wall_s": time.perf_counter() - t0, "curves": _curves(workdir)}


def _plot(runs: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in runs:
        label = f"{Path(r['config']).stem} s{r['seed']}"
        for ax, key in zip(axes, ("train", "val")):
            if r["curves"][key]:
                xs, ys = zip(*r["curves"][key])
                ax.plot(xs, ys, marker="o" if key == "val" else None, label=label)
    for ax, key in zip(axes, ("train", "val")):
        ax.set_xlabel("step")
        ax.set_ylabel(f"{key} loss (nats/token)")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default=",".join(TINY))
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--steps", type=int, default=0, help="train.steps for every run (0: config's)")
    ap.add_argument("--set", action="append", default=[], help="key=value for every run")
    ap.add_argument("--out", default="runs/study")
    args = ap.parse_args(argv)

    overrides = _parse_set(args.set)
    if args.steps:
        overrides.update({"train.steps": args.steps, "train.eval_every": max(args.steps // 3, 1)})
    os.makedirs(args.out, exist_ok=True)
    runs = []
    for path in args.configs.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            r = run_one(path, seed, overrides, args.out)
            runs.append(r)
            print(f"{Path(path).stem:22s} seed {seed}  val {r['val_loss']:.4f}  "
                  f"train {r['train_loss']:.4f}  {r['wall_s']:.0f}s", flush=True)

    by_cfg: dict[str, list[dict]] = {}
    for r in runs:
        by_cfg.setdefault(r["config"], []).append(r)
    base = statistics.mean(r["val_loss"] for r in next(iter(by_cfg.values())))
    dev = jax.devices()[0]
    print(f"\n{'config':22s} {'model':14s} {'params':>9s} {'val loss':>9s} {'val ppl':>8s} "
          f"{'train':>7s} {'vs first':>9s} {'wall s':>7s}   "
          f"({dev.device_kind}, seeds {args.seeds})")
    table = []
    for path, rs in by_cfg.items():
        val = statistics.mean(r["val_loss"] for r in rs)
        row = {"config": path, "model": rs[0]["model"], "params": rs[0]["params"],
               "val_loss": val, "val_loss_sd": statistics.pstdev(r["val_loss"] for r in rs),
               "train_loss": statistics.mean(r["train_loss"] for r in rs),
               "wall_s": statistics.mean(r["wall_s"] for r in rs), "val_minus_first": val - base}
        table.append(row)
        print(f"{Path(path).stem:22s} {row['model']:14s} {row['params'] / 1e6:8.3f}M "
              f"{val:9.4f} {math.exp(val):8.2f} {row['train_loss']:7.3f} "
              f"{val - base:+9.4f} {row['wall_s']:7.0f}")
    Path(args.out, "study.json").write_text(json.dumps(
        {"device": dev.device_kind, "overrides": overrides, "table": table, "runs": runs},
        indent=2, default=float))
    _plot(runs, os.path.join(args.out, "study.png"))
    print(f"wrote {args.out}/study.json and {args.out}/study.png")


if __name__ == "__main__":
    main()
