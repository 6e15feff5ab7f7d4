"""Deep optimizers on the tiny Transformer++: final validation loss and step time vs AdamW.

    python benchmarks/optimizers.py                       # every optimizer, 150 steps
    python benchmarks/optimizers.py --only adamw,muon --steps 50 --lr muon=0.03
    python benchmarks/optimizers.py --json /tmp/optimizers.json

Model and data: `configs/transformer_tiny.py` (validated with `hope_jax.config.validate`),
byte-level Python-stdlib text, seq 128, batch 16. Every optimizer sees the same pre-fetched
batches from the same init; the loss is evaluated on the same held-out batches at the end. Step time
is measured after training, runs interleaved round-robin (3 rounds x 8 compiled steps each, median,
block_until_ready), so load changes on a shared machine hit every optimizer alike.
Peak lrs are per optimizer (defaults below, from a 50-step sweep over 3 values each); all share
the config's schedule (warmup 30, cosine to 10%), clipping 1.0 and weight decay 0.1.
Params are routed with `labelled_groups` (logical axes -> exact matrix dims).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from configs.transformer_tiny import get_config  # noqa: E402
from hope_jax.config import validate  # noqa: E402
from hope_jax.models.lm import LM  # noqa: E402
from hope_jax.optim import build_optimizer, labelled_groups  # noqa: E402

# label -> optim-section overrides (name defaults to the label). Peak lrs of the non-Adam-scale
# optimizers from a 60-step sweep (val loss): sgd_momentum and dmgd {0.1, 0.3, 1}, muon
# {0.01, 0.02, 0.05, 0.1}, m3 {1e-5, 3e-5, 1e-4, 3e-4}, m3_ema {3e-5, 1e-4, 3e-4, 1e-3}; the
# Adam-scale ones (diagonal/Shampoo P with EMA writes) use AdamW's 3e-3.
RUNS = {
    "adamw": {"lr": 3e-3},
    "sgd_momentum": {"lr": 0.3},
    "precond_momentum": {"lr": 3e-3},
    "delta_momentum": {"lr": 3e-3},
    "dmgd": {"lr": 0.3},
    # the paper-literal forms (SPEC Eqs. 48-50 as printed; docs/PAPER.md deep-optimizer rows);
    # dmgd_paper's lr from a 60-step sweep {0.03, 0.1, 0.3}: 2.839, 2.764, 2.758
    "delta_momentum_paper": {"name": "delta_momentum", "delta_form": "paper", "lr": 3e-3},
    "dmgd_paper": {"name": "dmgd", "dmgd_form": "paper", "lr": 0.3},
    "muon": {"lr": 0.1, "aux_lr": 3e-3},
    "m3": {"lr": 1e-5, "aux_lr": 3e-3},
    "m3_ema": {"lr": 3e-5, "aux_lr": 3e-3},
}
# opt-in (--only): Shampoo's eigh root refresh is slow on CPU (seconds per refresh here);
EXTRA = {"precond_shampoo": {"name": "precond_momentum", "precond": "shampoo", "lr": 3e-3},
         # switches of docs/PAPER.md's deep-optimizer deviation table
         "delta_momentum_same": {"name": "delta_momentum", "other_params": "same", "lr": 3e-3},
         "muon_no_nesterov": {"name": "muon", "nesterov": False, "lr": 0.1, "aux_lr": 3e-3}}


def _stdlib_batches(seq: int, batch: int, n: int, split: str):
    """Fallback data: bytes of the stdlib's .py files, deterministic fixed-length rows."""
    import sysconfig

    files = sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py"))
    files = files[1::50] if split == "val" else [f for i, f in enumerate(files) if i % 50 != 1]
    data = np.frombuffer(b"".join(f.read_bytes() for f in files), np.uint8).astype(np.int32) + 1
    rows = len(data) // (seq + 1)
    data = data[: rows * (seq + 1)].reshape(rows, seq + 1)
    order = np.random.default_rng(0 if split == "train" else 1).permutation(rows)
    out = []
    for i in range(n):
        r = data[order[(i * batch + np.arange(batch)) % rows]]
        out.append({"inputs": r[:, :-1], "targets": r[:, 1:],
                    "mask": np.ones((batch, seq), np.float32)})
    return out


def load_batches(cfg, n_train: int, n_val: int):
    """(train batches, val batches, source name): the project pipeline, else the fallback."""
    try:
        from hope_jax.data import make_dataset

        it = iter(make_dataset(cfg.data, "train"))
        train = [next(it) for _ in range(n_train)]
        val_it = iter(make_dataset(cfg.data, "val", repeat=True))
        val = [next(val_it) for _ in range(n_val)]
        return train, val, "hope_jax.data.make_dataset(stdlib)"
    except Exception as e:  # pipeline not importable / not ready: read the bytes directly
        print(f"data pipeline unavailable ({type(e).__name__}: {e}); using raw stdlib bytes")
        d = cfg.data
        return (_stdlib_batches(d.seq_len, d.batch_size, n_train, "train"),
                _stdlib_batches(d.seq_len, d.batch_size, n_val, "val"), "raw stdlib bytes")


def _loss_fn(model):
    def loss(params, batch):
        kw = {k: batch[k] for k in ("positions", "segment_ids") if k in batch}
        logits = model.apply({"params": params}, batch["inputs"],
                             kw.get("positions"), kw.get("segment_ids")).astype(jnp.float32)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch["targets"])
        mask = batch["mask"].astype(jnp.float32)
        return jnp.sum(nll * mask) / jnp.maximum(jnp.sum(mask), 1.0)

    return loss


def run_one(label: str, overrides: dict, base, train, val) -> dict:
    raw = base.to_dict()
    raw["optim"].update({"name": label, **overrides})
    cfg = validate(raw)
    model = LM(cfg.model)
    boxed = jax.eval_shape(lambda: model.init(jax.random.key(0), train[0]["inputs"]))["params"]
    axes = jax.tree.map(lambda p: tuple(p.names), boxed,
                        is_leaf=lambda p: isinstance(p, nn.Partitioned))
    tx = build_optimizer(cfg.optim, len(train), labelled_groups(axes))
    params = nn.unbox(jax.jit(model.init)(jax.random.key(cfg.train.seed), train[0]["inputs"]))
    params = params["params"]
    opt_state = tx.init(params)
    loss = _loss_fn(model)

    @jax.jit
    def step(params, opt_state, batch):
        value, grads = jax.value_and_grad(loss)(params, batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, value

    eval_loss = jax.jit(loss)
    losses = []
    for batch in train:
        params, opt_state, value = step(params, opt_state, batch)
        losses.append(float(value))
    val_loss = float(np.mean([float(eval_loss(params, b)) for b in val]))

    def time_steps(n: int) -> list[float]:
        """Wall time of n more steps from the final state (compiled; state not kept)."""
        p, s, out = params, opt_state, []
        for i in range(n):
            t0 = time.perf_counter()
            p, s, v = step(p, s, train[i % len(train)])
            jax.block_until_ready(v)
            out.append(time.perf_counter() - t0)
        return out

    result = {"name": label, "optimizer": cfg.optim.name, "lr": cfg.optim.lr,
              "steps": len(train), "final_train_loss": losses[-1],
              "val_loss": val_loss if np.isfinite(val_loss) else float("nan")}
    return result, time_steps


def time_interleaved(timers: dict, rounds: int = 3, steps: int = 8) -> dict:
    """Median step time per run, runs interleaved round-robin so that load drifts on a shared
    machine hit every optimizer alike."""
    samples = {k: [] for k in timers}
    for _ in range(rounds):
        for k, fn in timers.items():
            samples[k] += fn(steps)
    return {k: statistics.median(v) for k, v in samples.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--val_batches", type=int, default=8)
    ap.add_argument("--only", default="", help="comma-separated run labels (keys of RUNS)")
    ap.add_argument("--lr", default="", help="overrides, e.g. muon=0.03,dmgd=0.5")
    ap.add_argument("--json", default="", help="write the results here")
    args = ap.parse_args(argv)

    base = get_config()
    base.train.steps = args.steps
    cfg = validate(base)
    runs = {k: dict(v) for k, v in {**RUNS, **EXTRA}.items()}
    for item in filter(None, args.lr.split(",")):
        k, v = item.split("=")
        runs.setdefault(k, {})["lr"] = float(v)
    names = [n for n in args.only.split(",") if n] or list(RUNS)
    if "adamw" not in names:
        names = ["adamw"] + names
    train, val, source = load_batches(cfg, args.steps, args.val_batches)
    device = f"{jax.devices()[0].platform} ({jax.device_count()} device(s))"
    print(f"tiny Transformer++ d={cfg.model.d_model} L={cfg.model.num_layers}, seq "
          f"{cfg.data.seq_len}, batch {cfg.data.batch_size}, {args.steps} steps, data: {source}, "
          f"device: {device}")
    results, timers = [], {}
    for n in names:
        r, timers[n] = run_one(n, runs.get(n, {}), base, train, val)
        results.append(r)
        print(f"  {n:17s} lr={r['lr']:<8g} val_loss={r['val_loss']:.4f}", flush=True)
    step_time = time_interleaved(timers)
    print("\n| optimizer | peak lr | final val loss | step time (ms) | step-time ratio vs adamw |")
    print("|---|---|---|---|---|")
    for r in results:
        r["step_time_s"] = step_time[r["name"]]
        r["time_ratio"] = step_time[r["name"]] / step_time["adamw"]
        print(f"| {r['name']} | {r['lr']:g} | {r['val_loss']:.4f} | "
              f"{1e3 * r['step_time_s']:.1f} | {r['time_ratio']:.2f} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": device, "data": source,
                                               "results": results}, indent=2))


if __name__ == "__main__":
    main()
