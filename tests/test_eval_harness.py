"""lm-eval adapter: exact log-likelihoods, and simple_evaluate end to end on local toy tasks."""

from __future__ import annotations

import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("lm_eval")

from hope_jax.data import build_tokenizer  # noqa: E402
from hope_jax.eval.harness import HopeJaxLM, bucket_len  # noqa: E402
from hope_jax.eval.run import Run  # noqa: E402
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
    from lm_eval.tasks import TaskManager

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
