"""Where a train step's time goes: per-op time from a `jax.profiler` trace, by model part.

    python benchmarks/profile_step.py --preset=s --batch=4 --seq=512 --set=model.d_model=256 \
        --set=model.num_layers=4 --set=model.mlp_hidden=768            # the anchors' setting
    python benchmarks/profile_step.py --models=hope \
        --variant='hope_residual:hope:model.hope.cms_grad=residual' --json=runs/profile.json

Models, presets, --set and --variant are those of `benchmarks/throughput.py` (the same
`jax.grad` of the next-token loss, compiled ahead of time). Each step is warmed up, then run
--steps times under `jax.profiler.trace(create_perfetto_trace=True)`. Every executed HLO op
(a fusion, a dot, a copy, a while loop's bookkeeping ...) is one event of the trace; its
exclusive time (minus the ops nested in it, e.g. a while loop's body) is summed by instruction
and mapped to the instruction's opcode and `op_name` metadata (JAX's name stack: the Flax module
path, `transpose(jvp(...))` for the backward pass) in the compiled HLO. Reported per model:

  part      scan slicing / mixer / cms / attention / ffn / embed+head / other (the first of PARTS
            whose pattern is in op_name), split into forward and backward (outer backward =
            `transpose(jvp(LM))`); XLA's own copies (no metadata: while loops' carried buffers,
            layout changes) apart, under the part of the loop whose body holds them
  opcode    fusion, dot, copy, dynamic-update-slice, while, ... (XLA's, after optimisation)

each with ms per step, its share of the traced op time, ops executed per step and mean µs per
op, beside the step's untraced wall time (what the ops' own time does not cover is spent
outside them: dispatch between ops, loop control, allocation; the trace does not say which).
A step made of many ops of a few µs each is bound by per-op overhead, not by arithmetic: fewer,
larger ops (wider chunks, batched memories, fused kernels) are then the remedy.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import re
import statistics
import sys
import tempfile
from pathlib import Path

import jax

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import compiled_grad_step, interleaved_times, write_json  # noqa: E402,E501
from benchmarks.study import parse_set  # noqa: E402
from benchmarks.throughput import model_configs, with_variants  # noqa: E402

PARTS = (("scan slicing", r"dynamic_(update_)?(slice|index)"),
         ("mixer", "/mixer|/memory/|neural_memory"), ("cms", "_cms"), ("attention", "attn"),
         ("ffn", "/mlp|ffn"),
         ("embed+head", "embed|final_norm|head|log_softmax|take_along_axis"))
_INSTR = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = .*? ([a-z][a-z0-9\-]*)\(")
_COMP = re.compile(r"^(?:ENTRY )?%([\w.\-]+) .*\{$")


def hlo_ops(hlo_text: str) -> dict[str, tuple[str, str]]:
    """{instruction name: (opcode, op_name metadata)} of a compiled module's text. A copy without
    metadata (XLA's own, of a while loop's carried buffers) takes its loop's op_name, marked."""
    out, comp_of, loop_of = {}, {}, {}
    comp = ""
    for line in hlo_text.splitlines():
        head = _COMP.match(line)
        if head:
            comp = head.group(1)
            continue
        m = _INSTR.match(line)
        if not m:
            continue
        meta = re.search(r'op_name="([^"]*)"', line)
        out[m.group(1)] = (m.group(2), meta.group(1) if meta else "")
        comp_of[m.group(1)] = comp
        body = re.search(r"body=%([\w.\-]+)", line) if m.group(2) == "while" else None
        if body:
            loop_of[body.group(1)] = out[m.group(1)][1]
    for name, (opcode, op_name) in out.items():
        if opcode == "copy" and not op_name:
            out[name] = (opcode, "XLA_LOOP_COPY " + loop_of.get(comp_of[name], ""))
    return out


def part_of(opcode: str, op_name: str) -> str:
    """The model part of an op (PARTS, first match) with its direction; XLA's own copies (no
    metadata) are "XLA copies" of their while loop's part ("other" outside any loop body)."""
    part = next((p for p, pat in PARTS if re.search(pat, op_name)), "other")
    if op_name.startswith("XLA_LOOP_COPY"):
        part = f"XLA copies: {part}"
    return f"{part} {'bwd' if 'transpose(jvp(LM))' in op_name else 'fwd'}"


def exclusive_times(events: list[dict], names: set[str]) -> dict[str, list[float]]:
    """{op name: [exclusive µs of each execution]} of the trace's complete events that are HLO
    instructions; an event's exclusive time is its duration minus that of the events nested in
    it on the same thread."""
    by_thread = collections.defaultdict(list)
    for e in events:
        if e.get("ph") == "X" and e.get("name") in names:
            by_thread[(e.get("pid"), e.get("tid"))].append(e)
    out = collections.defaultdict(list)
    for evs in by_thread.values():
        evs.sort(key=lambda e: (e["ts"], -e.get("dur", 0)))
        stack: list[list] = []  # [end, name, exclusive]
        for e in evs:
            while stack and stack[-1][0] <= e["ts"]:
                _, n, x = stack.pop()
                out[n].append(x)
            dur = float(e.get("dur", 0.0))
            if stack:
                stack[-1][2] -= dur
            stack.append([e["ts"] + dur, e["name"], dur])
        for _, n, x in stack:
            out[n].append(x)
    return out


def profile(compiled, params, toks, steps: int) -> tuple[dict, dict, float]:
    """(by part, by opcode, untraced wall ms per step) of `steps` traced runs, the tables as
    {key: {"ms", "ops", "us_per_op"}} per step."""
    ops = hlo_ops(compiled.as_text())
    jax.block_until_ready(compiled(params, toks))
    walls = interleaved_times({"step": (compiled, params, toks)}, steps)["step"]
    with tempfile.TemporaryDirectory() as d:
        with jax.profiler.trace(d, create_perfetto_trace=True):
            for _ in range(steps):
                jax.block_until_ready(compiled(params, toks))
        trace = glob.glob(f"{d}/**/perfetto_trace.json.gz", recursive=True)
        if not trace:
            raise SystemExit(f"jax.profiler wrote no perfetto trace under {d}")
        with gzip.open(trace[0]) as f:
            data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    times = exclusive_times(events, set(ops))
    tables: tuple[dict, dict] = ({}, {})
    for name, xs in times.items():
        opcode, op_name = ops[name]
        for table, key in zip(tables, (part_of(opcode, op_name), opcode)):
            row = table.setdefault(key, {"ms": 0.0, "ops": 0.0})
            row["ms"] += sum(xs) / 1e3 / steps
            row["ops"] += len(xs) / steps
    for table in tables:
        for row in table.values():
            row["us_per_op"] = 1e3 * row["ms"] / max(row["ops"], 1e-9)
    return tables[0], tables[1], 1e3 * statistics.median(walls)


def _print(title: str, table: dict) -> None:
    total = sum(r["ms"] for r in table.values()) or 1.0
    print(f"  {title:28s} {'ms/step':>9s} {'share':>6s} {'ops/step':>9s} {'µs/op':>7s}")
    for key, r in sorted(table.items(), key=lambda kv: -kv[1]["ms"]):
        if r["ms"] / total >= 0.005:
            print(f"  {key:28s} {r['ms']:9.1f} {100 * r['ms'] / total:5.1f}% {r['ops']:9.0f} "
                  f"{r['us_per_op']:7.1f}")
    ops = sum(r["ops"] for r in table.values())
    print(f"  {'total':28s} {total:9.1f} 100.0% {ops:9.0f} {1e3 * total / max(ops, 1):7.1f}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="transformer,titans_lmm,hope",
                    help="comma list of the preset's models and --variant labels")
    ap.add_argument("--preset", default="s")
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--set", action="append", default=[])
    ap.add_argument("--variant", action="append", default=[],
                    help="as in throughput.py: 'label:base:key=value;key=value'")
    ap.add_argument("--json", default="")
    args = ap.parse_args(argv)

    cfgs = with_variants(model_configs(args.preset, args.dtype, parse_set(args.set)),
                         args.variant)
    labels = [m for m in args.models.split(",") if m]
    labels += [v.split(":", 1)[0] for v in args.variant if v.split(":", 1)[0] not in labels]
    out = {"seq": args.seq, "batch": args.batch, "preset": args.preset, "set": args.set,
           "device": jax.devices()[0].device_kind, "models": {}}
    for label in labels:
        if label not in cfgs:
            raise SystemExit(f"--models: {label!r} is not one of {sorted(cfgs)}")
        compiled, params, toks, _, _ = compiled_grad_step(cfgs[label], args.batch, args.seq)
        by_part, by_op, wall = profile(compiled, params, toks, args.steps)
        traced = sum(r["ms"] for r in by_part.values())
        out["models"][label] = {"by_part": by_part, "by_opcode": by_op, "wall_ms": wall,
                                "traced_ms": traced}
        print(f"\n{label}: T={args.seq} B={args.batch} {args.dtype} ({out['device']}): "
              f"{wall:.1f} ms/step untraced, of which ops {traced:.1f} ms "
              f"({100 * traced / wall:.0f}%; the rest is outside the traced ops)")
        _print("part", by_part)
        _print("opcode", by_op)
    if args.json:
        write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
