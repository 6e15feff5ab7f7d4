"""Small-scale study: train several configs on the same data, tokens and optimizer; compare.

    python benchmarks/study.py --preset=s --seeds=0,1 --out=runs/study_s   # issue-10 study
    python benchmarks/study.py                                    # the three tiny configs
    python benchmarks/study.py --steps=100 --seeds=0,1 --evals= --out=runs/study
    python benchmarks/study.py --configs=configs/hope_small.py,configs/transformer_tiny.py \
        --set=model.d_model=64 --set=train.steps=50
    python benchmarks/study.py --configs=configs/hope_small.py --variant=rms: \
        --variant=gain:model.inner.out_gain=True --seeds=0,1 --evals=   # variants

Each (config, seed) trains with `hope_jax.train.loop.train` in its own workdir under --out
(an existing finished run is reused, an interrupted one resumes), with the overrides of --set and
--steps applied to every config alike (a preset adds its own, and per-config FFN widths that
equalise parameter counts). Each `--variant=NAME:key=value,key=value` runs every config once more
with its own keys on top (runs and table rows named `<config>_<NAME>`); none = the configs alone.
Then the evaluation suites of --evals run on the run
(`hope_jax.eval.suite`, results cached in `<workdir>/eval/results.json`): `mqar` and `continual`
train the run's architecture from scratch (task seed = run seed), `niah` greedy-decodes the
trained model. Prints a table of final validation loss / perplexity, MQAR / NIAH accuracy,
continual-learning backward transfer, parameter count and steady-state seconds per training
step (mean over seeds, with each model's validation loss relative to the first config's), and
writes `study.json`, `study.png` (validation and train loss curves), `study_summary.png` (bars with
95% intervals per label) and `study_mqar.png`.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import numpy as np  # noqa: E402

from hope_jax.config import replace  # noqa: E402
from hope_jax.param_count import load_config_file  # noqa: E402
from hope_jax.train.state import param_count  # noqa: E402

TINY = ("configs/transformer_tiny.py", "configs/titans_tiny.py", "configs/hope_tiny.py")
_TF, _TI, _HO = "configs/transformer_tiny.py", "configs/titans_tiny.py", "configs/hope_small.py"
_COMMON = {"model.num_layers": 2, "data.batch_size": 8, "optim.warmup_steps": 20,
           "train.steps": 150, "train.eval_every": 50}
# Equal-size triples (2 blocks, 4 heads, 128-token context, 150 steps x 8 x 128 tokens, AdamW 3e-3):
# FFN widths chosen so the parameter counts agree within 1%.
PRESETS = {
    "xs": ({**_COMMON, "model.d_model": 64},   # ~0.17M parameters
           {_TF: {"model.mlp_hidden": 320}, _TI: {"model.mlp_hidden": 246},
            _HO: {"model.mlp_hidden": 96}}),
    "s": ({**_COMMON, "model.d_model": 128},   # ~0.65M parameters
          {_TF: {"model.mlp_hidden": 640}, _TI: {"model.mlp_hidden": 496}, _HO: {}}),
}
# Long-context language modelling on the public-domain books (issue 18): the preset-s triple plus
# Gated DeltaNet and Samba (one Mamba2 + SWA unit = 2 mixer layers) at equal size, 1024-token
# context, byte-level; validation = the 5 held-out books, loss by position over them.
BOOKS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "books"
_GDN, _SAMBA = "configs/gated_deltanet_tiny.py", "configs/samba_tiny.py"
PRESETS["books"] = (
    {**PRESETS["s"][0], "data.source": "files", "data.train_paths": (str(BOOKS / "train"),),
     "data.val_paths": (str(BOOKS / "val"),), "data.seq_len": 1024, "data.batch_size": 4,
     "data.split_doc_bytes": 8192, "train.steps": 200, "train.eval_every": 100,
     "train.eval_batches": 16},
    {**PRESETS["s"][1], _HO: {"model.hope.cms_grad": "residual"},
     _GDN: {"model.mlp_hidden": 584, "model.inner.chunk_size": 64},
     _SAMBA: {"model.num_layers": 1, "model.mlp_hidden": 584, "model.memory.window": 512}})

# The books preset's five models at preset s (128-token context, stdlib corpus): the models of
# the recall (MQAR) and continual comparisons of issue 18 (HOPE with the residual teach signal).
PRESETS["s5"] = (PRESETS["s"][0], PRESETS["books"][1])

_EVAL_COLS = {"mqar_acc": "MQAR %", "niah_acc": "NIAH %", "cl_bwt": "CL BWT",
              "cl_final_loss": "CL loss", "cipher_fall": "cipher fall", "cipher_gap": "cipher gap"}


def parse_set(items: list[str]) -> dict:
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
    """Loss curves from metrics.jsonl, and the steady-state seconds per step: the median over
    consecutive train records of time / steps between them (compile and evals drop out)."""
    train, val, stamps = [], [], []
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        for line in f:
            rec = json.loads(line)
            if "train/loss" in rec:
                train.append((rec["step"], rec["train/loss"]))
                stamps.append((rec["step"], rec["time"]))
            if "val/loss" in rec:
                val.append((rec["step"], rec["val/loss"]))
    rates = [(t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in zip(stamps, stamps[1:]) if s1 > s0]
    step_s = statistics.median(rates) if rates else float("nan")
    return {"train": train, "val": val, "step_s": step_s}


def run_evals(cfg, workdir: str, evals: list[str], opts) -> dict:
    """The suites of `evals` on the trained run (cached ones are not rerun): headline numbers."""
    from hope_jax.eval.run import load_run
    from hope_jax.eval.suite import run_suite

    if {"ppl_position", "ppl_cipher"} & set(evals):  # by position, on the run's val documents
        opts = dataclasses.replace(opts, long_len=opts.long_len or cfg.data.seq_len,
                                   position_paths=opts.position_paths or cfg.data.val_paths)
    path = os.path.join(workdir, "eval", "results.json")
    done = json.loads(Path(path).read_text()) if os.path.exists(path) else {}
    todo = [e for e in evals if e not in done]
    res = done
    if todo:
        log = lambda m: print(f"  [{Path(workdir).name}] {m}", flush=True)  # noqa: E731
        res = run_suite(load_run(cfg, workdir), workdir, todo, opts, log)
    out = {}
    if "mqar" in res:
        out["mqar_by_kv"] = res["mqar"]["accuracy_by_num_kv"]
        out["mqar_acc"] = statistics.mean(out["mqar_by_kv"].values())
    if "niah" in res:
        out["niah_acc"] = statistics.mean(k["mean"] for k in res["niah"]["kinds"].values())
    if "ppl_position" in res:
        out["pos_positions"] = res["ppl_position"]["all"]["positions"]
        out["pos_loss"] = res["ppl_position"]["all"]["loss"]
    if "ppl_cipher" in res:
        out["cipher_fall"] = res["ppl_cipher"]["fall"]
        out["cipher_gap"] = float(np.mean(res["ppl_cipher"]["gap"]))
    if "continual" in res:
        out["cl_bwt"] = res["continual"]["backward_transfer"]
        out["cl_final_loss"] = res["continual"]["final_avg_loss"]
    return out


def parse_variant(item: str) -> tuple[str, dict]:
    """`NAME:key=value,key=value` -> (NAME, overrides); `NAME:` has none. Commas inside
    brackets belong to the value (`periods:model.hope.cms_periods=(64,0)`)."""
    name, sep, keys = item.partition(":")
    if not sep or not name:
        raise SystemExit(f"--variant expects NAME:key=value,..., got {item!r}")
    parts, depth, cur = [], 0, ""
    for ch in keys:
        depth += (ch in "([{") - (ch in ")]}")
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return name, parse_set([k for k in parts + [cur] if k])


def run_one(path: str, seed: int, overrides: dict, out: str, evals=(), opts=None,
            variant: str = "") -> dict:
    from hope_jax.train.loop import TrainingError, train

    cfg = load_config_file(path)
    cfg = replace(cfg, **{"data.seed": seed, "train.seed": seed, **overrides})
    label = Path(path).stem + (f"_{variant}" if variant else "")
    name = f"{label}_s{seed}"
    workdir = os.path.join(out, name)
    t0 = time.perf_counter()
    try:
        summary = train(cfg, workdir)
    except TrainingError as e:  # a diverged run is a result (its loss is nan), not a crash
        print(f"  [{name}] {e}", flush=True)
        summary = {"val_loss": float("nan"), "error": str(e)}
    wall = time.perf_counter() - t0
    metrics = run_evals(cfg, workdir, list(evals), opts) if evals else {}
    curves = _curves(workdir)
    return {"config": path, "label": label, "model": cfg.model.name, "seed": seed,
            "workdir": workdir, "overrides": overrides,
            "params": param_count(cfg), "val_loss": summary.get("val_loss"),
            "train_loss": curves["train"][-1][1] if curves["train"] else float("nan"),
            "steps": summary.get("step"), "error": summary.get("error"),
            "wall_s": wall, "step_s": curves["step_s"], "curves": curves, **metrics}


def _plot(runs: list[dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for r in runs:
        label = f"{r['label']} s{r['seed']}"
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


def _plot_position(table: list[dict], path: str) -> None:
    """Loss by position in the context, one line per label with its 95% band over seeds."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for row in table:
        xs, ys = np.asarray(row["pos_positions"]), np.asarray(row["pos_loss"])
        ci = np.nan_to_num(np.asarray(row["pos_loss_ci95"]))
        ax.plot(xs, ys, marker=".", label=f"{row['label']} ({len(row['seeds'])} seeds)")
        ax.fill_between(xs, ys - ci, ys + ci, alpha=0.2)
    ax.set_xlabel("position in the context (end of bin)")
    ax.set_ylabel("validation loss (nats/token)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _plot_summary(table: list[dict], cols: list[str], path: str) -> None:
    """Validation loss and every eval column: one panel each, a bar per label (mean over seeds,
    its 95% interval as the error bar, each seed a dot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = ["val_loss"] + cols
    fig, axes = plt.subplots(1, len(keys), figsize=(1.2 + 0.55 * len(table) * len(keys), 3.8),
                             squeeze=False)
    xs = np.arange(len(table))
    for ax, k in zip(axes[0], keys):
        means = [row[k] for row in table]
        ci = np.nan_to_num([row[f"{k}_ci95"] for row in table])
        ax.bar(xs, means, yerr=ci, capsize=3, color="#9ab", edgecolor="#345")
        for x, row in zip(xs, table):
            seeds = row["val_losses"] if k == "val_loss" else row.get(f"{k}_seeds", [])
            ax.plot([x] * len(seeds), seeds, "k.", ms=4)
        ax.set_xticks(xs, [row["label"] for row in table], rotation=60, ha="right", fontsize=7)
        ax.set_title({"val_loss": "val loss", **_EVAL_COLS}[k] + " (±95%)", fontsize=9)
        finite = [m for m in means if math.isfinite(m)]
        if k in ("val_loss", "cl_final_loss") and finite:  # losses: zoom on the differences
            lo, hi = min(finite), max(finite)
            ax.set_ylim(lo - 0.3 * (hi - lo + 0.05), hi + 0.3 * (hi - lo + 0.05))
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _print_position(table: list[dict]) -> None:
    rows = [r for r in table if "pos_loss" in r]
    if not rows:
        return
    n = len(rows[0]["pos_positions"])
    picks = sorted({0, n // 4 - 1, n // 2 - 1, n - 1} - {-1})
    print("\nloss by position (mean ± 95% interval over seeds; bins end at the position named)")
    print(f"{'config':22s} " + " ".join(f"{'<=' + str(rows[0]['pos_positions'][i]):>16s}"
                                         for i in picks) + f" {'last-first':>11s}")
    for r in rows:
        print(f"{r['label']:22s} " + " ".join(
            f"{r['pos_loss'][i]:8.4f} ± {r['pos_loss_ci95'][i]:5.3f}" for i in picks)
            + f" {r['pos_loss'][-1] - r['pos_loss'][0]:+11.4f}")
    if any("pos_minus_first" in r for r in rows[1:]):
        print(f"\nloss by position minus {rows[0]['label']}'s on the same windows, seed by seed "
              "(mean ± paired 95% interval)")
        for r in rows[1:]:
            if "pos_minus_first" in r:
                print(f"{r['label']:22s} " + " ".join(
                    f"{r['pos_minus_first'][i]:+8.4f} ± {r['pos_minus_first_ci95'][i]:5.3f}"
                    for i in picks))


def _mean_sd(xs) -> tuple[float, float]:
    """Mean and population sd; a nan (a diverged seed) makes both nan instead of raising."""
    a = np.asarray(list(xs), np.float64)
    return float(a.mean()), float(a.std())


def ci95(xs) -> float:
    """Half-width of the 95% Student-t interval of the mean over seeds (nan below 2 seeds)."""
    from scipy.stats import t

    a = np.asarray(list(xs), np.float64)
    if len(a) < 2:
        return float("nan")
    return float(t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / math.sqrt(len(a)))


def summarize(runs: list[dict]) -> list[dict]:
    """One row per label (config × variant) over its seeds: mean ± sd of every number, how
    many seeds diverged, and the val loss minus the first label's. Seed s of every label trains
    on the same data order, so differences to the first label are also taken seed by seed
    (`*_minus_first_paired`, with a paired 95% interval: tighter when the seeds' data, not the
    models, move the losses)."""
    by_label: dict[str, list[dict]] = {}
    for r in runs:
        by_label.setdefault(r["label"], []).append(r)
    cols = [k for k in _EVAL_COLS if any(k in r for r in runs)]
    base = None
    first = next(iter(by_label.values()), [])
    first_val = {r["seed"]: r["val_loss"] for r in first}
    first_pos = {r["seed"]: r["pos_loss"] for r in first if "pos_loss" in r}
    table = []
    for label, rs in by_label.items():
        val, val_sd = _mean_sd(r["val_loss"] for r in rs)
        base = val if base is None else base
        row = {"config": rs[0]["config"], "label": label, "model": rs[0]["model"],
               "params": rs[0]["params"], "seeds": [r["seed"] for r in rs],
               "val_losses": [r["val_loss"] for r in rs], "val_loss": val, "val_loss_sd": val_sd,
               "val_loss_ci95": ci95(r["val_loss"] for r in rs),
               "diverged": sum(not math.isfinite(r["val_loss"]) for r in rs),
               "train_loss": _mean_sd(r["train_loss"] for r in rs)[0],
               "step_s": _mean_sd(r["step_s"] for r in rs)[0], "val_minus_first": val - base}
        for k in cols:
            row[k], row[f"{k}_sd"] = _mean_sd(r.get(k, float("nan")) for r in rs)
            row[f"{k}_ci95"] = ci95(r.get(k, float("nan")) for r in rs)
            row[f"{k}_seeds"] = [r.get(k, float("nan")) for r in rs]
        if all("pos_loss" in r for r in rs):  # loss by position: mean and 95% interval per bin
            curves = np.asarray([r["pos_loss"] for r in rs], np.float64)
            row["pos_positions"] = rs[0]["pos_positions"]
            row["pos_loss"] = curves.mean(0).tolist()
            row["pos_loss_ci95"] = [ci95(c) for c in curves.T]
            paired = [np.subtract(r["pos_loss"], first_pos[r["seed"]]) for r in rs
                      if r["seed"] in first_pos]
            if paired:
                row["pos_minus_first"] = np.mean(paired, axis=0).tolist()
                row["pos_minus_first_ci95"] = [ci95(c) for c in np.asarray(paired).T]
        paired_val = [r["val_loss"] - first_val[r["seed"]] for r in rs if r["seed"] in first_val]
        row["val_minus_first_paired"] = _mean_sd(paired_val)[0] if paired_val else float("nan")
        row["val_minus_first_paired_ci95"] = ci95(paired_val)
        table.append(row)
    return table


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--configs", default="", help="comma-separated config files "
                    "(default: the preset's, else the three tiny configs)")
    ap.add_argument("--preset", default="", choices=("",) + tuple(PRESETS),
                    help="equal-size Transformer++ / Titans / HOPE triple")
    ap.add_argument("--evals", default="mqar,continual,niah",
                    help="suites run on every trained run (empty: none)")
    ap.add_argument("--mqar-config", default="configs/mqar_tiny.py",
                    help="MQAR task config (configs/mqar_recall.py: pairs a chunk before queries)")
    ap.add_argument("--mqar-steps", type=int, default=200)
    ap.add_argument("--mqar-batch", type=int, default=16)
    ap.add_argument("--continual-steps", type=int, default=30, help="steps per domain")
    ap.add_argument("--niah-lengths", default="256")
    ap.add_argument("--position-windows", type=int, default=4,
                    help="ppl_position: windows per validation document")
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--steps", type=int, default=0, help="train.steps for every run (0: config's)")
    ap.add_argument("--set", action="append", default=[], help="key=value for every run")
    ap.add_argument("--variant", action="append", default=[],
                    help="NAME:key=value,... : every config once more with these keys")
    ap.add_argument("--out", default="runs/study")
    args = ap.parse_args(argv)

    from hope_jax.eval.suite import SuiteOptions

    if args.preset == "books" and not BOOKS.is_dir():
        raise SystemExit(f"--preset=books needs the books corpus at {BOOKS} (absent here)")
    common, per_cfg = PRESETS[args.preset] if args.preset else ({}, {})
    configs = args.configs.split(",") if args.configs else list(per_cfg) or list(TINY)
    overrides = {**common, **parse_set(args.set)}
    evals = [e for e in args.evals.split(",") if e]
    opts = SuiteOptions(niah_lengths=tuple(int(n) for n in args.niah_lengths.split(",")),
                        niah_depths=(0.0, 0.5, 1.0), niah_samples=1, mqar_config=args.mqar_config,
                        mqar_steps=args.mqar_steps,
                        mqar_batch=args.mqar_batch, continual_steps=args.continual_steps,
                        position_windows=args.position_windows)
    if args.steps:
        overrides.update({"train.steps": args.steps, "train.eval_every": max(args.steps // 3, 1)})
    os.makedirs(args.out, exist_ok=True)
    runs = []
    variants = [parse_variant(v) for v in args.variant] or [("", {})]
    for path in configs:
        for vname, vkeys in variants:
            for seed in (int(s) for s in args.seeds.split(",")):
                r = run_one(path, seed, {**overrides, **per_cfg.get(path, {}), **vkeys}, args.out,
                            evals, opts, vname)
                runs.append(r)
                print(f"{r['label']:22s} seed {seed}  val {r['val_loss']:.4f}  "
                      f"train {r['train_loss']:.4f}  {r['step_s']:.2f} s/step  "
                      + "  ".join(f"{k} {r[k]:.3f}" for k in _EVAL_COLS if k in r), flush=True)

    dev = jax.devices()[0]
    table = summarize(runs)
    cols = [k for k in _EVAL_COLS if any(k in r for r in runs)]
    print(f"\n{'config':22s} {'model':14s} {'params':>9s} {'val loss':>9s} {'±95%':>6s} "
          f"{'val ppl':>8s} "
          f"{'train':>7s} {'vs first':>9s} {'paired ±95%':>16s} {'s/step':>7s} {'diverged':>8s} "
          + " ".join(f"{_EVAL_COLS[k] + ' ±95%':>12s}" for k in cols)
          + f"   ({dev.device_kind}, seeds {args.seeds})")
    for row in table:
        val = row["val_loss"]
        print(f"{row['label']:22s} {row['model']:14s} {row['params'] / 1e6:8.3f}M "
              f"{val:9.4f} {row['val_loss_ci95']:6.3f} {math.exp(val):8.2f} "
              f"{row['train_loss']:7.3f} "
              f"{row['val_minus_first']:+9.4f} "
              f"{row['val_minus_first_paired']:+8.4f}±{row['val_minus_first_paired_ci95']:7.4f} "
              f"{row['step_s']:7.2f} "
              f"{row['diverged']:>4d}/{len(row['seeds'])} "
              + " ".join(f"{row[k]:7.3f}±{row[f'{k}_ci95']:.2f}" for k in cols))
    Path(args.out, "study.json").write_text(json.dumps(
        {"device": dev.device_kind, "overrides": overrides, "table": table, "runs": runs},
        indent=2, default=float))
    _print_position(table)
    _plot(runs, os.path.join(args.out, "study.png"))
    _plot_summary(table, cols, os.path.join(args.out, "study_summary.png"))
    if any("pos_loss" in row for row in table):
        _plot_position([r for r in table if "pos_loss" in r],
                       os.path.join(args.out, "study_position.png"))
    if "mqar_by_kv" in runs[0]:
        from hope_jax.eval import mqar

        mqar.plot({f"{r['label']} s{r['seed']}": {"accuracy_by_num_kv": r["mqar_by_kv"]}
                   for r in runs}, os.path.join(args.out, "study_mqar.png"))
    print(f"wrote {args.out}/study.json and {args.out}/study.png")


if __name__ == "__main__":
    main()
