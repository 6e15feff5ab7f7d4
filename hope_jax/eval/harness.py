"""lm-evaluation-harness adapter: a hope_jax run directory as an `lm_eval` model ("hope_jax").

  lm_eval --model hope_jax --model_args workdir=runs/hope_760m --tasks piqa,hellaswag
  python eval.py --workdir=runs/hope_760m --tasks=wikitext,lambada_openai,piqa,...
  python eval.py --workdir=... --tasks=piqa,arc_easy --task_data=piqa=/data/piqa.jsonl,...

Offline tasks (`local_tasks`): the harness's own YAML of each task (its prompts, targets and
metrics), with only the dataset replaced by a local file (`dataset_path: json` + `data_files`).

Log-likelihoods are computed in batches of requests sorted by length, right-padded to a
power-of-two length bucket (one compiled function per (batch, bucket) shape) and scored by one
jitted log-softmax gather; `generate_until` decodes greedily with carried state
(`models/decode.py`) where the model supports it, else by exact recompute.

Shape legend: B batch, T time, V vocabulary.
"""

from __future__ import annotations

import math
import os

import jax
import jax.numpy as jnp
import numpy as np
from lm_eval.api.model import LM as _HarnessLM
from lm_eval.api.registry import register_model
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window

from hope_jax.eval.sample import generate
from hope_jax.models.ntp import ntp_segment


def bucket_len(n: int, min_len: int = 16, multiple: int = 1) -> int:
    """Smallest power of two >= max(n, min_len), rounded up to a multiple of `multiple`."""
    b = 1 << max(0, math.ceil(math.log2(max(n, min_len, 1))))
    return -(-b // multiple) * multiple


# HF `datasets` builder by the local file's extension; anything else is read as JSON lines.
_BUILDERS = {".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}


def parse_task_data(items) -> dict[str, str]:
    """`["piqa=/data/piqa.jsonl", ...]` -> `{"piqa": "/data/piqa.jsonl"}` (ValueError if bad)."""
    out = {}
    for item in items:
        name, sep, path = item.partition("=")
        if not sep or not name or not path:
            raise ValueError(f"--task_data item {item!r} is not task=path")
        if name in out:
            raise ValueError(f"--task_data names task {name!r} twice")
        out[name] = path
    return out


def local_task_config(task_manager, name: str, path: str) -> dict:
    """The harness's own config of task `name`, its evaluation split read from the file `path`.

    The task's YAML (with its `include`s and `!function`s resolved, as the harness loads it) is
    kept whole except the dataset: `dataset_path` becomes the `datasets` builder for the file
    (json for .jsonl/.json/.gz, parquet, csv), `data_files` maps the split the task evaluates
    (`test_split`, else `validation_split`) to the file, and the other splits are dropped (the
    file must hold the columns of the task's HF dataset, e.g. goal/sol1/sol2/label for piqa).
    """
    from lm_eval.tasks._index import Kind
    from lm_eval.tasks._yaml_loader import load_yaml

    entry = task_manager.task_index.get(name)
    if entry is None:
        raise ValueError(f"--task_data: {name!r} is not an lm-eval task")
    if entry.kind is not Kind.TASK or entry.yaml_path is None:
        raise ValueError(f"--task_data: {name!r} is a {entry.kind.name.lower()}, not a task with a "
                         "YAML definition; give a file for each of its tasks")
    if not os.path.isfile(path):
        raise ValueError(f"--task_data {name}={path}: no such file")
    cfg = load_yaml(entry.yaml_path, resolve_func=True)
    if "custom_dataset" in cfg:
        raise ValueError(f"--task_data: task {name!r} builds its own dataset (custom_dataset)")
    split = cfg.get("test_split") or cfg.get("validation_split")
    if not split:
        raise ValueError(f"--task_data: task {name!r} has no test or validation split")
    ext = os.path.splitext(path)[1].lower()
    cfg.update(dataset_path=_BUILDERS.get(ext, "json"), dataset_name=None,
               dataset_kwargs={"data_files": {split: os.path.abspath(path)}},
               training_split=None, fewshot_split=None,
               validation_split=split if split == cfg.get("validation_split") else None,
               test_split=split if split == cfg.get("test_split") else None)
    return cfg


def local_tasks(task_manager, tasks: list[str], task_data: dict[str, str]) -> list:
    """`tasks` with each one named in `task_data` replaced by its `local_task_config`."""
    unknown = sorted(set(task_data) - set(tasks))
    if unknown:
        raise ValueError(f"--task_data names {unknown}, not in --tasks={tasks}")
    return [local_task_config(task_manager, t, task_data[t]) if t in task_data else t
            for t in tasks]


def make_scorer(model):
    """Jitted `(params, inputs_BT, targets_BT) -> (logp_BT, greedy_BT)` in fp32."""

    @jax.jit
    def score(params, inputs_BT, targets_BT):
        logits = model.apply({"params": params}, inputs_BT).astype(jnp.float32)
        logp = jax.nn.log_softmax(logits, axis=-1)
        tgt = jnp.take_along_axis(logp, targets_BT[..., None], axis=-1)[..., 0]
        return tgt, jnp.argmax(logits, axis=-1) == targets_BT

    return score


@register_model("hope_jax")
class HopeJaxLM(_HarnessLM):
    """lm-eval model over a trained run (`workdir=`) or an in-memory `hope_jax.eval.run.Run`."""

    def __init__(self, workdir: str | None = None, run=None, batch_size: int | str = 8,
                 max_length: int | str | None = None, max_gen_toks: int | str = 256, **kwargs):
        super().__init__()
        if run is None:
            from hope_jax import cli
            from hope_jax.eval.run import load_run

            if workdir is None:
                raise ValueError("hope_jax needs model_args workdir=<run directory>")
            run = load_run(cli.load_workdir_config(workdir), workdir)
        self.run = run
        self.tok = run.tokenizer
        self.batch_size = int(batch_size)
        self.max_length = int(max_length or run.cfg.data.seq_len)
        self.max_gen_toks = int(max_gen_toks)
        self._score = make_scorer(run.model)
        self._multiple = ntp_segment(run.cfg.model, self.max_length) or 1

    # -- token-level scoring ------------------------------------------------------------------

    def score_pairs(self, pairs: list[tuple[list[int], list[int]]]) -> list[tuple[float, bool]]:
        """(sum log p(cont | ctx), cont is the greedy continuation) per (ctx, cont) token pair."""
        rows = []
        for ctx, cont in pairs:
            if not cont:
                raise ValueError("empty continuation")
            full = (list(ctx) or [self.tok.eos_id]) + list(cont)
            full = full[-(self.max_length + 1):]
            rows.append((full[:-1], full[1:], len(cont)))
        order = sorted(range(len(rows)), key=lambda i: -len(rows[i][0]))
        out: list[tuple[float, bool]] = [(0.0, False)] * len(rows)
        for s in range(0, len(order), self.batch_size):
            idx = order[s:s + self.batch_size]
            t = bucket_len(len(rows[idx[0]][0]), multiple=self._multiple)
            inp = np.zeros((self.batch_size, t), np.int32)
            tgt = np.zeros((self.batch_size, t), np.int32)
            for r, i in enumerate(idx):
                x, y, _ = rows[i]
                inp[r, :len(x)], tgt[r, :len(y)] = x, y
            logp, greedy = jax.device_get(self._score(self.run.params, inp, tgt))
            for r, i in enumerate(idx):
                n, k = len(rows[i][0]), rows[i][2]
                out[i] = (float(np.sum(logp[r, n - k:n], dtype=np.float64)),
                          bool(np.all(greedy[r, n - k:n])))
        return out

    def _encode_pair(self, context: str, continuation: str):
        # lm-eval convention: trailing spaces of the context belong to the continuation
        n_space = len(context) - len(context.rstrip())
        if n_space:
            continuation, context = context[-n_space:] + continuation, context[:-n_space]
        ctx = self.tok.encode(context)
        return ctx, self.tok.encode(context + continuation)[len(ctx):]

    # -- the lm_eval API ----------------------------------------------------------------------

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        return self.score_pairs([self._encode_pair(*r.args) for r in requests])

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        pairs, owner = [], []
        for j, r in enumerate(requests):
            windows = get_rolling_token_windows(
                token_list=self.tok.encode(r.args[0]), prefix_token=self.tok.eos_id,
                max_seq_len=self.max_length, context_len=1)
            for w in map(make_disjoint_window, windows):
                pairs.append(w)
                owner.append(j)
        sums = [0.0] * len(requests)
        for j, (lp, _) in zip(owner, self.score_pairs(pairs)):
            sums[j] += lp
        return sums

    def generate_until(self, requests, disable_tqdm: bool = False):
        outs = []
        for r in requests:
            context, kw = r.args
            until = kw.get("until") or []
            until = [until] if isinstance(until, str) else list(until)
            max_new = int(kw.get("max_gen_toks", self.max_gen_toks))
            ids = (self.tok.encode(context) or [self.tok.eos_id])[-self.max_length:]
            new = generate(self.run.model, self.run.params, ids, max_new, temperature=0.0,
                           stop_id=self.tok.eos_id)
            text = self.tok.decode([t for t in new if t != self.tok.eos_id])
            for s in until:
                if s and s in text:
                    text = text[:text.index(s)]
            outs.append(text)
        return outs
