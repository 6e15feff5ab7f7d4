"""NIAH / MQAR generators and scorers, and the continual-learning report (no model training)."""

from __future__ import annotations

import json
import os
import re

import numpy as np
import pytest

from hope_jax.data.tokenizers import ByteTokenizer
from hope_jax.eval import continual, mqar, niah

TOK = ByteTokenizer()


def test_niah_deterministic_and_sized():
    for kind in niah.KINDS:
        a = niah.make_sample(kind, 400, 0.5, 3, TOK, haystack="Real text here. More of it. ")
        b = niah.make_sample(kind, 400, 0.5, 3, TOK, haystack="Real text here. More of it. ")
        c = niah.make_sample(kind, 400, 0.5, 4, TOK, haystack="Real text here. More of it. ")
        assert a == b and a["answer"] != c["answer"]
        assert a["answer"] in a["prompt"] and len(TOK.encode(a["prompt"])) <= 400
    shallow = niah.make_sample("passkey", 600, 0.0, 0, TOK)
    deep = niah.make_sample("passkey", 600, 1.0, 0, TOK)
    assert shallow["prompt"].index("special magic") < deep["prompt"].index("special magic")


def _oracle(prompt, max_new):  # reads the needle back: a perfect retriever
    return " " + re.search(r"special magic [a-z ]+s for \w+ is: (\S+)\.", prompt).group(1)


def test_niah_scorer_oracle_and_random():
    rng = np.random.default_rng(0)
    rand = lambda p, n: "".join(rng.choice(list("0123456789abcdef-"), n))  # noqa: E731
    kw = dict(lengths=(300, 400), depths=(0.0, 0.5, 1.0), samples=2)
    good = niah.run_grid(_oracle, TOK, **kw)
    bad = niah.run_grid(rand, TOK, **kw)
    for kind in niah.KINDS:
        assert good["kinds"][kind]["mean"] == 100.0
        assert bad["kinds"][kind]["mean"] == 0.0  # chance of guessing 7 digits / a UUID ~ 0


def test_mqar_generator_and_scorer():
    a = mqar.make_batch(np.random.default_rng(1), 4, 8, 40)
    b = mqar.make_batch(np.random.default_rng(1), 4, 8, 40)
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert a["mask"].sum() == 4 * 8
    row, tgt = a["inputs"][0], a["targets"][0]
    kv = dict(zip(row[0:16:2], row[1:16:2]))
    for t in np.nonzero(a["mask"][0])[0]:  # each masked target is the queried key's value
        assert kv[row[t]] == tgt[t]

    def oracle(batch):
        return np.eye(129)[batch["targets"]]

    rng = np.random.default_rng(0)
    acc = mqar.evaluate(oracle, [2, 8], 40, batches=2, batch=8)
    assert acc == {2: 100.0, 8: 100.0}
    rand = mqar.evaluate(lambda bt: rng.normal(size=bt["inputs"].shape + (129,)), [8], 40,
                         batches=8, batch=16)
    assert rand[8] < 5.0  # chance = 1/129 over the whole vocabulary


def test_mqar_plot_takes_results_read_back_from_json(tmp_path):
    """results.json turns the int keys of accuracy_by_num_kv into strings; plot takes both."""
    fresh = {"accuracy_by_num_kv": {2: 90.0, 8: 40.0}}
    cached = json.loads(json.dumps(fresh))
    path = mqar.plot({"fresh": fresh, "cached": cached}, str(tmp_path / "mqar.png"))
    assert os.path.getsize(path) > 0


def test_continual_report_hand_made():
    m = [[1.0, 3.0, 4.0],
         [1.5, 2.0, 3.5],
         [1.8, 2.6, 1.2]]
    r = continual.report(m, ["a", "b", "c"])
    assert r["forgetting"] == pytest.approx({"a": 0.8, "b": 0.6, "c": 0.0})
    assert r["backward_transfer"] == pytest.approx(-0.7)
    assert r["final_avg_loss"] == pytest.approx((1.8 + 2.6 + 1.2) / 3)
    assert r["learned_avg_loss"] == pytest.approx((1.0 + 2.0 + 1.2) / 3)
    with pytest.raises(ValueError):
        continual.report([[1.0]], ["a", "b"])


def test_loss_by_position_bins():
    nll = lambda p, w: np.tile(np.arange(8, dtype=np.float32), (w.shape[0], 1))  # noqa: E731
    r = continual.loss_by_position(nll, None, np.zeros((3, 9), np.int32), bins=4)
    assert r == {"positions": [2, 4, 6, 8], "loss": [0.5, 2.5, 4.5, 6.5]}
