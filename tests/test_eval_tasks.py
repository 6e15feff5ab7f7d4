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


def _past_chunk_memory(chunk: int, vocab: int = 129):
    """A perfect memory that reads only the pairs written in chunks before the query's chunk
    (how Titans/HOPE read, SPEC A1): logits one-hot at the value it can see, else at 0."""
    def logits(batch):
        out = np.zeros(batch["inputs"].shape + (vocab,))
        for b, row in enumerate(batch["inputs"]):
            for t in np.nonzero(batch["mask"][b])[0]:
                seen = {row[p]: row[p + 1] for p in range(0, (t // chunk) * chunk - 1)
                        if batch["mask"][b, p] == 0 and row[p] != 0}
                out[b, t, seen.get(row[t], 0)] = 1.0
        return out
    return logits


def test_mqar_gap_puts_every_pair_a_chunk_before_its_query():
    """With gap >= chunk, a memory that reads only past chunks answers every query (issue 18
    item 2: no model is at chance by construction); without a gap it cannot see the pairs of the
    chunk the queries start in. The gap is pad tokens, and the queries stay correct."""
    a = mqar.make_batch(np.random.default_rng(2), 3, 8, 64, gap=16)
    assert a["mask"].sum() == 3 * 8 and not a["inputs"][:, 16:32].any()
    assert np.nonzero(a["mask"][0])[0].min() == 32
    mem = _past_chunk_memory(16)
    assert mqar.evaluate(mem, [4, 8], 64, batches=2, batch=4, gap=16) == {4: 100.0, 8: 100.0}
    # no gap: 4 pairs + their queries share chunk 0, so none is visible (8 pairs fill chunk 0
    # exactly and are all visible: the construction, not the model, decides)
    assert mqar.evaluate(mem, [4, 8], 64, batches=2, batch=4) == {4: 0.0, 8: 100.0}
    with pytest.raises(ValueError, match="gap=40"):
        mqar.make_batch(np.random.default_rng(0), 1, 8, 64, gap=40)


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


def test_ppl_position_on_held_out_files(tmp_path):
    """`ppl_position` on given text files (issue 18's books): each file long enough is a domain
    of evenly spaced windows scored by the model, `all` is the mean over domains, a file shorter
    than the window is left out, and a path with no text file is one clear error."""
    import jax
    import jax.numpy as jnp

    from hope_jax.eval.run import Run
    from hope_jax.eval.suite import SuiteOptions, run_ppl_cipher, run_ppl_position
    from hope_jax.models.lm import LM
    from tests.helpers import tiny_config

    books = tmp_path / "books"
    books.mkdir()
    (books / "a.txt").write_text("the cat sat on the mat. " * 20)
    (books / "b.txt").write_text("0123456789" * 30)
    (books / "short.txt").write_text("too short")
    (tmp_path / "notes.md").write_text("not read: only *.txt of a directory")
    cfg = tiny_config(**{"data.seq_len": 16, "model.d_model": 32, "model.num_layers": 1})
    model = LM(cfg.model)
    params = model.init(jax.random.key(0), jnp.zeros((1, 8), jnp.int32))["params"]
    run = Run(cfg, model, params, TOK, 0)
    opts = SuiteOptions(long_len=32, position_paths=(str(books),), position_windows=3)
    out = run_ppl_position(run, opts, str(tmp_path))
    assert set(out["domains"]) == {"a", "b"} and out["length"] == 32
    nll = continual.make_nll_fn(model)
    for name in ("a", "b"):
        ids = np.asarray(TOK.encode((books / f"{name}.txt").read_text()), np.int32)
        want = continual.loss_by_position(nll, params, continual.windows(ids, 32, 3, None))
        np.testing.assert_allclose(out["domains"][name]["loss"], want["loss"], rtol=1e-6)
    np.testing.assert_allclose(out["all"]["loss"], np.mean(
        [out["domains"][n]["loss"] for n in ("a", "b")], axis=0), rtol=1e-6)
    assert os.path.exists(out["plot"])
    with pytest.raises(FileNotFoundError, match="no text file"):
        continual.file_domains([str(tmp_path / "empty_dir_missing")])
    # ppl_cipher: the same windows of the ciphered text, beside the plain curve
    ciph = run_ppl_cipher(run, opts, str(tmp_path))
    np.testing.assert_allclose(ciph["plain"], out["all"]["loss"], rtol=1e-6)
    ids = np.asarray(TOK.encode(continual.cipher((books / "a.txt").read_text())), np.int32)
    want = continual.loss_by_position(nll, params, continual.windows(ids, 32, 3, None))
    np.testing.assert_allclose(ciph["domains"]["a"]["loss"], want["loss"], rtol=1e-6)
    assert ciph["fall"] == pytest.approx(ciph["cipher"][0] - ciph["cipher"][-1])
    np.testing.assert_allclose(ciph["gap"], np.subtract(ciph["cipher"], ciph["plain"]))
    assert os.path.exists(ciph["plot"])


def test_cipher_is_a_fixed_letter_bijection():
    text = "The Cat sat, on the mat! 0123 éü"
    c = continual.cipher(text)
    assert c == continual.cipher(text) and c != text and c != continual.cipher(text, seed=1)
    assert [ch.isupper() for ch in c] == [ch.isupper() for ch in text]
    assert [ch for ch in c if not ch.isascii() or not ch.isalpha()] == [
        ch for ch in text if not ch.isascii() or not ch.isalpha()]  # only letters change
    pairs = {(a, b) for a, b in zip(text.lower(), c.lower()) if a.isascii() and a.isalpha()}
    assert len({a for a, _ in pairs}) == len(pairs) == len({b for _, b in pairs})  # a bijection
