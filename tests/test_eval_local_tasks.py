"""Offline lm-eval: the harness's own task definitions (piqa, lambada_openai, arc_easy) run on
small local files in the columns of the tasks' HF datasets, without network or hand-written YAML."""

from __future__ import annotations

import json
import math
import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import pytest  # noqa: E402
from lm_eval.tasks import TaskManager  # noqa: E402

from hope_jax.data import build_tokenizer  # noqa: E402
from hope_jax.eval.harness import HopeJaxLM, local_task_config, parse_task_data  # noqa: E402
from hope_jax.eval.run import Run  # noqa: E402
from hope_jax.eval.suite import SuiteOptions, run_lm_eval  # noqa: E402
from hope_jax.models.lm import LM  # noqa: E402
from tests.helpers import tiny_config  # noqa: E402

PIQA = [{"goal": "To dry wet hands", "sol1": "use a towel", "sol2": "use a bucket of water",
         "label": 0},
        {"goal": "To open a jar", "sol1": "twist the lid", "sol2": "sing to it", "label": 0},
        {"goal": "To cool soup", "sol1": "boil it", "sol2": "let it sit", "label": 1}]
LAMBADA = [{"text": "the cat sat on the mat"}, {"text": "she opened the door and saw the sea"}]
ARC = [{"id": f"q{i}", "question": q, "answerKey": k,
        "choices": {"text": t, "label": ["A", "B", "C"]}}
       for i, (q, t, k) in enumerate([("Which is a liquid?", ["rock", "water", "wood"], "B"),
                                      ("What gives light?", ["sun", "stone", "sand"], "A")])]


def _jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture(scope="module")
def run():
    cfg = tiny_config(**{"data.seq_len": 32})
    model = LM(cfg.model)
    params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
    return Run(cfg, model, params, build_tokenizer(cfg.data), 0)


@pytest.fixture(scope="module")
def tm():
    return TaskManager()


class _Req:
    def __init__(self, *args):
        self.args = args


def test_local_config_is_the_harness_task_with_a_local_dataset(tm, tmp_path):
    path = _jsonl(tmp_path / "piqa.jsonl", PIQA)
    cfg = local_task_config(tm, "piqa", path)
    assert cfg["doc_to_text"] == "Question: {{goal}}\nAnswer:"  # from lm_eval's own piqa.yaml
    assert cfg["dataset_path"] == "json" and cfg["dataset_name"] is None
    assert cfg["dataset_kwargs"] == {"data_files": {"validation": path}}
    assert cfg["training_split"] is None and cfg["validation_split"] == "validation"
    arc = local_task_config(tm, "arc_easy", path)
    assert arc["test_split"] == "test" and arc["validation_split"] is None
    with pytest.raises(ValueError, match="'ai2_arc' is a tag"):
        local_task_config(tm, "ai2_arc", path)
    with pytest.raises(ValueError, match="'no_such_task' is not an lm-eval task"):
        local_task_config(tm, "no_such_task", path)
    with pytest.raises(ValueError, match="no such file"):
        local_task_config(tm, "piqa", str(tmp_path / "absent.jsonl"))
    with pytest.raises(ValueError, match="not task=path"):
        parse_task_data(["piqa"])


def test_suite_runs_local_piqa_lambada_arc_offline(run, tmp_path):
    data = {"piqa": _jsonl(tmp_path / "piqa.jsonl", PIQA),
            "lambada_openai": _jsonl(tmp_path / "lmb.jsonl", LAMBADA),
            "arc_easy": _jsonl(tmp_path / "arc.jsonl", ARC)}
    opts = SuiteOptions(tasks=tuple(data), task_data=tuple(f"{k}={v}" for k, v in data.items()),
                        batch_size=4)
    res = run_lm_eval(run, opts, str(tmp_path))["results"]
    # the scores are the harness's prompts scored by our model: recompute them by hand
    lm = HopeJaxLM(run=run, batch_size=4)
    ll = lambda ctx, cont: lm.loglikelihood([_Req(ctx, cont)])[0][0]  # noqa: E731
    acc = [max((0, 1), key=lambda j: ll(f"Question: {d['goal']}\nAnswer:",
                                        " " + d[f"sol{j + 1}"])) == d["label"] for d in PIQA]
    assert res["piqa"]["acc,none"] == pytest.approx(sum(acc) / len(acc))
    nll = [ll(" ".join(d["text"].split()[:-1]), " " + d["text"].split()[-1]) for d in LAMBADA]
    assert res["lambada_openai"]["perplexity,none"] == pytest.approx(
        math.exp(-sum(nll) / len(nll)), rel=1e-4)
    assert 0.0 <= res["arc_easy"]["acc,none"] <= 1.0 and "acc_norm,none" in res["arc_easy"]
    with pytest.raises(ValueError, match=r"--task_data names \['boolq'\], not in --tasks"):
        run_lm_eval(run, SuiteOptions(tasks=("piqa",), task_data=(f"boolq={data['piqa']}",)),
                    str(tmp_path))
