"""lm-eval adapter: exact log-likelihoods, simple_evaluate end to end on local toy tasks, and the
harness's own task definitions (piqa, lambada_openai, arc_easy) run offline on small local files in
the columns of the tasks' HF datasets (`--task_data`), without hand-written YAML."""

from __future__ import annotations

import json
import math
import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("lm_eval")

from lm_eval.tasks import TaskManager  # noqa: E402

from hope_jax.data import build_tokenizer  # noqa: E402
from hope_jax.eval.harness import (  # noqa: E402
    HopeJaxLM,
    bucket_len,
    local_task_config,
    parse_task_data,
)
from hope_jax.eval.run import Run  # noqa: E402
from hope_jax.eval.suite import SuiteOptions, run_lm_eval  # noqa: E402
from hope_jax.eval.tables import paper_row, write_toy_tasks  # noqa: E402
from hope_jax.models.lm import LM  # noqa: E402
from tests.helpers import tiny_config  # noqa: E402


@pytest.fixture(scope="module")
def run():
    cfg = tiny_config(**{"data.seq_len": 32})
    model = LM(cfg.model)
    params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
    return Run(cfg, model, params, build_tokenizer(cfg.data), 0)


class _Req:
    def __init__(self, *args):
        self.args = args



def test_bucket_len():
    assert [bucket_len(n) for n in (1, 16, 17, 100)] == [16, 16, 32, 128]
    assert bucket_len(17, multiple=48) == 48


def test_loglikelihood_equals_direct(run):
    lm = HopeJaxLM(run=run, batch_size=2)
    reqs = [("def f(x):", " return x"), ("hello", " world!"), ("", "abc"), ("a" * 50, " tail")]
    got = lm.loglikelihood([_Req(*r) for r in reqs])
    tok = run.tokenizer
    fwd = jax.jit(lambda x: run.model.apply({"params": run.params}, x))
    for (ctx, cont), (lp, _) in zip(reqs, got):
        ci = tok.encode(ctx) or [tok.eos_id]
        full = (ci + tok.encode(cont))[-33:]  # max_length 32 -> keep the last 33 tokens
        x = np.zeros((1, 64), np.int32)  # right padding: causal, real positions unchanged
        x[0, :len(full) - 1] = full[:-1]
        logp = np.asarray(jax.nn.log_softmax(fwd(jnp.asarray(x))[0].astype(jnp.float32), -1))
        k = len(tok.encode(cont))
        want = sum(logp[i, full[i + 1]] for i in range(len(full) - 1 - k, len(full) - 1))
        assert lp == pytest.approx(want, abs=1e-4)
    # rolling = the sum over the whole string, starting from EOS
    text = "x = 1\ny = 2\n"
    (roll,) = lm.loglikelihood_rolling([_Req(text)])
    (pair,) = lm.loglikelihood([_Req("", text)])
    assert roll == pytest.approx(pair[0], abs=1e-4)


def test_simple_evaluate_offline(run, tmp_path):
    from lm_eval import simple_evaluate

    lines = [f"the value of item {i} is {i * 7 % 13} units" for i in range(40)]
    tasks = write_toy_tasks(str(tmp_path), lines, n=8)
    lm = HopeJaxLM(run=run, batch_size=4, max_gen_toks=4)
    out = simple_evaluate(model=lm, tasks=tasks, task_manager=TaskManager(
        include_path=str(tmp_path), include_defaults=False), bootstrap_iters=0,
        log_samples=False)
    res = out["results"]
    assert 0.0 <= res["toy_choice"]["acc,none"] <= 1.0
    assert res["toy_rolling"]["word_perplexity,none"] > 1.0
    row = paper_row(res)
    assert "toy_lastword acc" in row and "Avg" not in row


# the harness's own tasks on local files ---------------------------------------------------------

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
def tm():
    return TaskManager()


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
