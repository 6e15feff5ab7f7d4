"""The evaluation suite of a run directory: every report as JSON + markdown (+ PNG) under
`<workdir>/eval/`, and side-by-side comparison of several runs (`compare`).

Suites: `ppl` (validation loss/ppl/bpb), `lm_eval` (harness tasks; offline toy tasks when no task
list is given), `niah` (S-NIAH-1/2/3 grid + heatmap), `ppl_position` (loss by position on long
held-out documents), `ppl_cipher` (the same on a letter-substitution cipher of them: a language
the model has never seen, learnable only in context), `mqar` (train the run's architecture from
scratch on MQAR), `continual` (sequential domains with the run's architecture). `all` = every
suite.
"""

from __future__ import annotations

import dataclasses
import json
import os
import runpy
from collections.abc import Callable

import numpy as np

from hope_jax.eval import continual, mqar, niah
from hope_jax.eval.run import Run, score
from hope_jax.eval.sample import generate
from hope_jax.eval.tables import harness_task_names, markdown_table, paper_row, write_toy_tasks

SUITES = ("ppl", "lm_eval", "niah", "ppl_position", "ppl_cipher", "mqar", "continual")


@dataclasses.dataclass
class SuiteOptions:
    tasks: tuple[str, ...] = ()
    task_dir: str = ""
    task_data: tuple[str, ...] = ()  # "task=path": the harness's task on a local file
    limit: int = 0
    batch_size: int = 8
    niah_lengths: tuple[int, ...] = (256, 512)
    niah_depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    niah_samples: int = 2
    long_len: int = 0
    position_paths: tuple[str, ...] = ()  # ppl_position on these files (whole: held out)
    position_windows: int = 4  # evenly spaced windows per document
    mqar_config: str = "configs/mqar_tiny.py"
    mqar_steps: int = 0
    mqar_batch: int = 0
    continual_steps: int = 50
    max_batches: int = 8


def _haystack(limit: int = 200_000) -> str:
    doms = continual.default_domains(max_bytes=limit)
    return doms.get("tinyshakespeare") or next(iter(doms.values()))


def run_lm_eval(run: Run, opts: SuiteOptions, out_dir: str) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    from hope_jax.eval.harness import HopeJaxLM, local_tasks, parse_task_data

    tasks, task_dir = list(harness_task_names(opts.tasks)), opts.task_dir
    task_data = parse_task_data(opts.task_data)
    task_data = dict(zip(harness_task_names(task_data), task_data.values()))
    if not tasks:  # offline: toy tasks from held-out text
        task_dir = task_dir or os.path.join(out_dir, "toy_tasks")
        text = continual.default_domains(("json",), 100_000)["stdlib/json"]
        tasks = write_toy_tasks(task_dir, text.splitlines()[-2000:])
    tm = TaskManager(include_path=task_dir or None)
    specs = local_tasks(tm, tasks, task_data) if task_data else tasks
    lm = HopeJaxLM(run=run, batch_size=opts.batch_size)
    res = simple_evaluate(model=lm, tasks=specs, task_manager=tm, limit=opts.limit or None,
                          bootstrap_iters=0, log_samples=False)
    results = {t: {k: v for k, v in r.items() if isinstance(v, (int, float, str))}
               for t, r in res["results"].items()}
    return {"tasks": tasks, "results": results, "table": paper_row(results)}


def run_niah(run: Run, opts: SuiteOptions, out_dir: str) -> dict:
    def gen(prompt, max_new):
        ids = run.tokenizer.encode(prompt)
        return run.tokenizer.decode(generate(run.model, run.params, ids, max_new, temperature=0.0))

    res = niah.run_grid(gen, run.tokenizer, lengths=opts.niah_lengths, depths=opts.niah_depths,
                        samples=opts.niah_samples, haystack=_haystack())
    res["heatmap"] = niah.plot_heatmaps(res, os.path.join(out_dir, "niah.png"), run.cfg.model.name)
    return res


def _position_docs(run: Run, opts: SuiteOptions, transform=lambda t: t) -> dict:
    """Token ids of the loss-by-position documents: `opts.position_paths` (whole files, e.g.
    held-out books), else the held-out tail of the default domains; `transform` maps the text."""
    if opts.position_paths:
        return {n: np.asarray(run.tokenizer.encode(transform(t)), np.int32)
                for n, t in continual.file_domains(opts.position_paths).items()}
    return {n: continual.split_tokens(transform(t), run.tokenizer)[1]
            for n, t in continual.default_domains(max_bytes=400_000).items()}


def _loss_by_position(run: Run, opts: SuiteOptions, docs: dict, what: str) -> dict:
    """Per-document curves over `opts.position_windows` windows and `all` = their mean."""
    length = opts.long_len or 4 * run.cfg.data.seq_len
    nll = continual.make_nll_fn(run.model)
    out = {"length": length, "domains": {}}
    for name, val in docs.items():
        if len(val) > length + 1:
            wins = continual.windows(val, length, opts.position_windows, None)
            out["domains"][name] = continual.loss_by_position(nll, run.params, wins)
    if not out["domains"]:
        raise ValueError(f"{what}: no document is longer than {length} tokens")
    curves = [r["loss"] for r in out["domains"].values()]
    out["all"] = {"positions": next(iter(out["domains"].values()))["positions"],
                  "loss": np.mean(curves, axis=0).tolist()}
    return out


def _plot_position(run: Run, curves: dict, path: str) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, r in curves.items():
        ax.plot(r["positions"], np.exp(r["loss"]), label=name)
    ax.axvline(run.cfg.data.seq_len, ls="--", c="gray", label="train length")
    ax.set_xlabel("position")
    ax.set_ylabel("perplexity")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def run_ppl_position(run: Run, opts: SuiteOptions, out_dir: str) -> dict:
    """Loss by position on the held-out documents (`_position_docs`)."""
    out = _loss_by_position(run, opts, _position_docs(run, opts), "ppl_position")
    out["plot"] = _plot_position(run, out["domains"], os.path.join(out_dir, "ppl_position.png"))
    return out


def run_ppl_cipher(run: Run, opts: SuiteOptions, out_dir: str) -> dict:
    """Learning a new language in context (issue 18 item 3): loss by position on the held-out
    documents under a fixed letter-substitution cipher (`continual.cipher`), beside the plain
    text on the same windows. `fall` = first bin - last bin of the cipher curve (what the model
    learned of the unseen language from the context alone); `gap` = cipher - plain per bin."""
    plain = _loss_by_position(run, opts, _position_docs(run, opts), "ppl_cipher")
    ciph = _loss_by_position(run, opts, _position_docs(run, opts, continual.cipher), "ppl_cipher")
    c, p = np.asarray(ciph["all"]["loss"]), np.asarray(plain["all"]["loss"])
    out = {"length": ciph["length"], "positions": ciph["all"]["positions"],
           "cipher": ciph["all"]["loss"], "plain": plain["all"]["loss"],
           "fall": float(c[0] - c[-1]), "gap": (c - p).tolist(), "domains": ciph["domains"]}
    out["plot"] = _plot_position(run, {"cipher": ciph["all"], "plain": plain["all"]},
                                 os.path.join(out_dir, "ppl_cipher.png"))
    return out


def run_mqar(run: Run, opts: SuiteOptions, out_dir: str, log) -> dict:
    from hope_jax.config import validate

    raw = runpy.run_path(opts.mqar_config)["get_config"]()
    base = raw["base"].to_dict() if hasattr(raw["base"], "to_dict") else dict(raw["base"])
    base["model"] = dataclasses.asdict(run.cfg.model)  # the run's architecture, from scratch
    if opts.mqar_steps:
        base["train"]["steps"] = opts.mqar_steps
    if opts.mqar_batch:
        base["data"]["batch_size"] = opts.mqar_batch
    # the task's seed follows the run's seed, so seeds of a study draw different MQAR data
    task = {**raw["task"], "seed": raw["task"].get("seed", 0) + run.cfg.train.seed}
    base["train"]["seed"] = run.cfg.train.seed
    res = mqar.train_and_evaluate(validate(base), task, log)
    res["plot"] = mqar.plot({run.cfg.model.name: res}, os.path.join(out_dir, "mqar.png"))
    return res


def run_continual(run: Run, opts: SuiteOptions, out_dir: str, log) -> dict:
    res = continual.run(run.cfg, continual.default_domains(), run.tokenizer,
                        opts.continual_steps, log=log)
    res["plot"] = continual.plot({run.cfg.model.name: res}, os.path.join(out_dir, "continual.png"))
    return res


def run_suite(run: Run, workdir: str, suites, opts: SuiteOptions,
              log: Callable[[str], None] = lambda s: None) -> dict:
    """Runs the suites, writes `<workdir>/eval/results.json` (merged) and `results.md`."""
    out_dir = os.path.join(workdir, "eval")
    os.makedirs(out_dir, exist_ok=True)
    path = os.path.join(out_dir, "results.json")
    results = {}
    if os.path.exists(path):
        with open(path) as f:
            results = json.load(f)
    results.update({"model": run.cfg.model.name, "step": run.step})
    for s in (SUITES if "all" in suites else suites):
        log(f"suite {s} ...")
        if s == "ppl":
            results[s] = score(run, (), opts.max_batches)
        elif s in ("mqar", "continual"):
            results[s] = globals()[f"run_{s}"](run, opts, out_dir, log)
        elif s in SUITES:
            results[s] = globals()[f"run_{s}"](run, opts, out_dir)
        else:
            raise ValueError(f"unknown suite {s!r}; choose from {SUITES + ('all',)}")
        with open(path, "w") as f:
            json.dump(results, f, indent=2)
    with open(os.path.join(out_dir, "results.md"), "w") as f:
        f.write(markdown_report({os.path.basename(os.path.normpath(workdir)): results}))
    return results


def summary_row(r: dict) -> dict:
    """The headline numbers of one run's results.json as a flat {column: value} row."""
    row = {}
    if "ppl" in r:
        row["val ppl"] = r["ppl"]["ppl"]
    row.update(r.get("lm_eval", {}).get("table", {}))
    for kind, v in r.get("niah", {}).get("kinds", {}).items():
        for n, acc in zip(r["niah"]["lengths"], v["mean_by_length"]):
            row[f"NIAH {kind} {n}"] = acc
    for n, acc in r.get("mqar", {}).get("accuracy_by_num_kv", {}).items():
        row[f"MQAR {n}kv"] = acc
    if "continual" in r:
        row["CL final loss"] = r["continual"]["final_avg_loss"]
        row["CL BWT"] = r["continual"]["backward_transfer"]
    return row


def markdown_report(runs: dict[str, dict]) -> str:
    """Markdown table of several runs' headline numbers side by side."""
    return markdown_table({name: summary_row(r) for name, r in runs.items()}) + "\n"


def compare(workdirs) -> dict:
    """{"runs": {name: results}, "markdown": table} for several run directories."""
    runs = {}
    for w in workdirs:
        with open(os.path.join(w, "eval", "results.json")) as f:
            runs[os.path.basename(os.path.normpath(w))] = json.load(f)
    return {"runs": {n: summary_row(r) for n, r in runs.items()},
            "markdown": markdown_report(runs)}
