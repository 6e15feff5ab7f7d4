"""Data pipeline properties: exact packing, determinism, resumable state, sharding, bad input."""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
from pathlib import Path

import numpy as np
import pytest

from hope_jax.config import DataConfig
from hope_jax.data import (
    ByteTokenizer,
    DataError,
    HFTokenizer,
    SentencePieceTokenizer,
    build_tokenizer,
    load_documents,
    make_dataset,
    stdlib_documents,
)

EOS = ByteTokenizer.eos_id
SHAKESPEARE = Path(__file__).resolve().parents[1] / ".." / "shared/data/tinyshakespeare/input.txt"


def _doc_texts(n: int = 13) -> list[str]:
    """Deterministic documents of very different lengths (1 to ~6 rows of T=16), some non-ASCII."""
    return [f"d{i}:" + "abcdefghé"[i % 9] * ((i * 37) % 83) + "\n" for i in range(n)]


def _write_txt(root: Path, texts: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(texts):
        (root / f"doc{i:03d}.txt").write_text(text, encoding="utf-8")
    return root


def _cfg(paths=(), **kw) -> DataConfig:
    base = dict(source="files", train_paths=tuple(str(p) for p in paths), val_fraction=0.0,
                seq_len=16, batch_size=3, seed=0)
    return dataclasses.replace(DataConfig(), **{**base, **kw})


def _take(ds_or_it, n: int | None = None) -> list[dict]:
    """The first n batches (all if n is None)."""
    return list(itertools.islice(iter(ds_or_it), n))


def _same(a: list[dict], b: list[dict]) -> bool:
    return len(a) == len(b) and all(
        x.keys() == y.keys() and all(np.array_equal(x[k], y[k]) for k in x) for x, y in zip(a, b))


def _docs_from_batches(batches: list[dict], eos: int = EOS,
                       partial_tail: bool = False) -> list[tuple[int, ...]]:
    """Rebuilds each document's target sequence from a stream of batches, checking the packing.

    Row r of every batch is lane r (see packing.py): a document continues in the same row of the
    next batch. Checks: mask == (segment_ids > 0); padding only at row ends; each segment is
    contiguous with consecutive positions; inputs are the previous targets inside a segment; a
    segment starts at position 0 (input EOS) unless it is the first of its row and continues the
    lane's document exactly where it stopped; a segment that ends inside a row ends its document
    with EOS. Documents are returned in the order they were drawn (batch, row, column of their
    first pair). With `partial_tail` (a stream cut anywhere), unfinished documents are dropped.
    """
    done, cur = [], {}  # cur[lane] = (start key, targets so far)
    for bi, batch in enumerate(batches):
        assert batch["inputs"].dtype == np.int32 and batch["mask"].dtype == np.float32
        for row, (inp, tgt, pos, seg, mask) in enumerate(zip(*(batch[k] for k in (
                "inputs", "targets", "positions", "segment_ids", "mask")))):
            np.testing.assert_array_equal(mask, (seg > 0).astype(np.float32))
            used = int((seg > 0).sum())
            assert (seg[used:] == 0).all() and (seg[:used] > 0).all()
            for s in range(1, int(seg.max(initial=0)) + 1):
                idx = np.nonzero(seg == s)[0]
                assert len(idx) and (np.diff(idx) == 1).all()
                p, x, y = pos[idx], inp[idx], tgt[idx]
                assert (np.diff(p) == 1).all()
                np.testing.assert_array_equal(x[1:], y[:-1])  # next token, within the document
                if p[0] == 0:
                    assert x[0] == eos
                    if row in cur:
                        assert cur[row][1][-1] == eos
                        done.append(cur.pop(row))
                    cur[row] = ((bi, row, int(idx[0])), [])
                else:
                    key, toks = cur[row]
                    assert s == 1 and p[0] == len(toks) and x[0] == toks[-1]
                cur[row][1].extend(int(t) for t in y)
                if idx[-1] < len(seg) - 1 and seg[idx[-1] + 1] > 0:
                    assert y[-1] == eos  # the next segment of this row is another document
    for key, toks in cur.values():
        if not (partial_tail and toks[-1] != eos):
            done.append((key, toks))
    docs = [tuple(toks) for _, toks in sorted(done, key=lambda kv: kv[0])]
    for d in docs:
        assert d[-1] == eos and eos not in d[:-1]
    return docs


def _expected(texts, tok=None) -> list[tuple[int, ...]]:
    tok = tok or ByteTokenizer()
    return [tuple(tok.encode(t)) + (tok.eos_id,) for t in texts]


@pytest.mark.parametrize("shuffle", [False, True])
def test_every_target_exactly_once_per_epoch(tmp_path, shuffle):
    texts = _doc_texts()
    cfg = _cfg([_write_txt(tmp_path / "c", texts)], shuffle=shuffle)
    batches = _take(make_dataset(cfg, "train", repeat=False))
    docs = _docs_from_batches(batches)
    assert sorted(docs) == sorted(_expected(texts))
    assert sum(b["mask"].sum() for b in batches) == sum(len(d) for d in _expected(texts))
    assert all(b["inputs"].shape == (3, 16) for b in batches)
    if not shuffle:
        assert docs == _expected(texts)  # file order
    else:
        assert docs != _expected(texts)


def test_epochs_reshuffle_and_each_covers_the_corpus(tmp_path):
    texts = _doc_texts()
    cfg = _cfg([_write_txt(tmp_path / "c", texts)], shuffle=True, seed=3)
    n_tokens = sum(len(d) for d in _expected(texts))
    batches = _take(make_dataset(cfg, "train"), 5 * n_tokens // (3 * 16) + 2)
    docs = _docs_from_batches(batches, partial_tail=True)
    n = len(texts)
    epochs = [docs[e * n:(e + 1) * n] for e in range(3)]
    for ep in epochs:
        assert sorted(ep) == sorted(_expected(texts))
    assert epochs[0] != epochs[1] and epochs[1] != epochs[2]


def test_determinism_by_seed(tmp_path):
    root = _write_txt(tmp_path / "c", _doc_texts())
    a = _take(make_dataset(_cfg([root], seed=1), "train"), 12)
    b = _take(make_dataset(_cfg([root], seed=1), "train"), 12)
    c = _take(make_dataset(_cfg([root], seed=2), "train"), 12)
    assert _same(a, b) and not _same(a, c)
    v1 = _take(make_dataset(_cfg([root], seed=1, val_fraction=0.3), "val"))
    v2 = _take(make_dataset(_cfg([root], seed=2, val_fraction=0.3), "val"))
    assert _same(v1, v2)  # validation does not depend on the training seed


def test_retrieval_mix_adds_answered_niah_documents_to_train_only(tmp_path):
    """data.retrieval_mix: a share of synthetic S-NIAH documents (each ending with its answer)
    joins the train epoch beside every corpus document; val, the seed's order and bad values."""
    from hope_jax.data.retrieval import RetrievalMix, min_length
    from hope_jax.eval import niah

    texts = [f"Sentence {i} of a real document. " * 12 for i in range(9)]
    root = _write_txt(tmp_path / "c", texts)
    tok = ByteTokenizer()
    length = min_length(tok) + 64
    cfg = _cfg([root], seq_len=64, retrieval_mix=0.25, retrieval_len=length, val_fraction=0.0)
    docs = _docs_from_batches(_take(make_dataset(cfg, "train", repeat=False)))
    decoded = [tok.decode([t for t in d if t != EOS]) for d in docs]
    real = [t for t in decoded if "special magic" not in t]
    synth = [t for t in decoded if "special magic" in t]
    assert sorted(real) == sorted(texts)  # every corpus document once per epoch
    assert len(synth) == round(9 * 0.25 / 0.75) == 3  # a quarter of the 12 documents
    kinds = set()
    for t in synth:
        body, answer = t[:-1].rsplit(" ", 1)  # "... the provided text is <answer>."
        assert t.endswith(".") and f"is: {answer}." in body and len(tok.encode(t)) <= length + 2
        kinds.add("pass key" if "pass key" in t else "uuid" if "uuid" in t else "number")
        if "pass key" not in t:
            assert "of a real document" in t  # the haystack is the corpus's own text
    assert kinds == {"pass key", "number", "uuid"}
    # never an evaluation sample: the same (kind, length, depth, seed) draws another value
    mix = RetrievalMix(texts, tok, 0.25, length, seed=0)
    ex = niah.make_sample("passkey", length, 0.5, 0, tok)
    assert ex["answer"] not in "".join(mix[i] for i in range(len(mix)))
    a = _take(make_dataset(cfg, "train"), 6)
    assert _same(a, _take(make_dataset(cfg, "train"), 6))
    assert not _same(a, _take(make_dataset(dataclasses.replace(cfg, seed=1), "train"), 6))
    held = _cfg([root], seq_len=64, val_fraction=0.3)
    assert _same(_take(make_dataset(held, "val")),
                 _take(make_dataset(dataclasses.replace(held, retrieval_mix=0.5,
                                                        retrieval_len=length), "val")))
    with pytest.raises(DataError, match="data.retrieval_len=40 tokens is too short"):
        make_dataset(dataclasses.replace(cfg, retrieval_len=40), "train")
    from hope_jax.config import ConfigError, default_config_dict, validate

    bad = default_config_dict()
    bad["data"]["retrieval_mix"] = 1.0
    with pytest.raises(ConfigError, match="retrieval_mix=1.0 must be in"):
        validate(bad)


@pytest.mark.parametrize("split,repeat", [("train", True), ("train", False), ("val", False)])
def test_state_round_trip(tmp_path, split, repeat):
    root = _write_txt(tmp_path / "c", _doc_texts())
    cfg = _cfg([root], shuffle=True, val_fraction=0.4, batch_size=2)
    n_ref = 40 if repeat else None  # 40 batches of train cross several epoch boundaries
    ref = _take(make_dataset(cfg, split, repeat=repeat), n_ref)
    assert len(ref) > 4
    for k in sorted({0, 1, len(ref) // 3, len(ref) // 2 + 1, len(ref) - 1}):
        it = iter(make_dataset(cfg, split, repeat=repeat))
        for _ in range(k):
            next(it)
        state = json.loads(json.dumps(it.get_state()))  # must survive JSON (orbax)
        it2 = iter(make_dataset(cfg, split, repeat=repeat))
        it2.set_state(state)
        assert _same(_take(it2, len(ref) - k), ref[k:]), f"resume after {k} batches"


def test_state_saved_with_orbax_async_restores_exactly(tmp_path):
    """The recipe for the trainer: grain's orbax handler next to params in one CheckpointManager."""
    grain = pytest.importorskip("grain")
    ocp = pytest.importorskip("orbax.checkpoint")
    cfg = _cfg([_write_txt(tmp_path / "c", _doc_texts())], batch_size=2)
    it = iter(make_dataset(cfg, "train"))
    ref = _take(make_dataset(cfg, "train"), 12)[5:]
    for _ in range(5):
        next(it)
    params = {"w": np.arange(4.0, dtype=np.float32)}
    options = ocp.CheckpointManagerOptions(max_to_keep=2, enable_async_checkpointing=True)
    with ocp.CheckpointManager(tmp_path / "ckpt", options=options) as mngr:
        mngr.save(5, args=ocp.args.Composite(params=ocp.args.StandardSave(params),
                                             data=grain.checkpoint.CheckpointSave(it)))
        for _ in range(4):  # training goes on while the save completes in the background
            next(it)
        mngr.wait_until_finished()
    it2 = iter(make_dataset(cfg, "train"))
    with ocp.CheckpointManager(tmp_path / "ckpt") as mngr:
        restored = mngr.restore(5, args=ocp.args.Composite(
            params=ocp.args.StandardRestore(params), data=grain.checkpoint.CheckpointRestore(it2)))
    np.testing.assert_array_equal(restored["params"]["w"], params["w"])
    assert _same(_take(it2, len(ref)), ref)


def test_positions_continue_across_batches_and_reset_at_documents(tmp_path):
    texts = ["x" * 40, "yy\n"]  # 41 + 4 pairs with T=16: the first document spans 3 batches
    cfg = _cfg([_write_txt(tmp_path / "c", texts)], shuffle=False, batch_size=2)
    b0, b1, b2 = _take(make_dataset(cfg, "train", repeat=False))
    np.testing.assert_array_equal(b0["positions"][0], np.arange(16))  # lane 0: document 0
    np.testing.assert_array_equal(b1["positions"][0], np.arange(16, 32))
    np.testing.assert_array_equal(b2["positions"][0, :9], np.arange(32, 41))
    np.testing.assert_array_equal(b0["segment_ids"][1], [1] * 4 + [0] * 12)  # lane 1: document 1
    np.testing.assert_array_equal(b0["positions"][1, :4], np.arange(4))
    assert b0["inputs"][0, 0] == EOS and b2["targets"][0, 8] == EOS
    assert b2["mask"][0, 9:].sum() == 0 and b1["mask"][1].sum() == 0  # lanes run dry: padding


def test_rows_of_a_batch_come_from_different_documents(tmp_path):
    texts = [chr(97 + i) * 100 for i in range(6)]
    cfg = _cfg([_write_txt(tmp_path / "c", texts)], shuffle=False, batch_size=3)
    (batch,) = _take(make_dataset(cfg, "train", repeat=False), 1)
    assert len({int(r[1]) for r in batch["inputs"]}) == 3


def test_max_doc_bytes_truncates(tmp_path):
    texts = ["é" * 30, "abc"]
    cfg = _cfg([_write_txt(tmp_path / "c", texts)], shuffle=False, max_doc_bytes=7)
    assert list(load_documents(cfg, "train")) == ["ééé", "abc"]


def test_process_sharding_train_documents_disjoint_and_covering(tmp_path):
    texts = _doc_texts(15)
    cfg = _cfg([_write_txt(tmp_path / "c", texts)], shuffle=True, batch_size=4)
    n_batches = 2 * sum(len(d) for d in _expected(texts)) // (2 * 16)  # >= 1 epoch per process
    per_proc = []
    for p in range(2):
        batches = _take(make_dataset(cfg, "train", process_index=p, process_count=2), n_batches)
        assert batches[0]["inputs"].shape == (2, 16)
        per_proc.append(set(_docs_from_batches(batches, partial_tail=True)))
    assert not per_proc[0] & per_proc[1]
    assert per_proc[0] | per_proc[1] == set(_expected(texts))


def test_process_sharding_val_rows_disjoint_equal_counts_and_covering(tmp_path):
    texts = _doc_texts(15)
    cfg = _cfg([_write_txt(tmp_path / "c", texts)], val_fraction=0.5, batch_size=4)
    full = _take(make_dataset(cfg, "val"))
    parts = [_take(make_dataset(cfg, "val", process_index=p, process_count=2)) for p in range(2)]
    assert len(parts[0]) == len(parts[1]) == len(full)
    for g, b0, b1 in zip(full, *parts):
        assert b0["inputs"].shape == (2, 16)
        for k in g:  # process p holds rows [2p, 2p + 2) of the global batch
            np.testing.assert_array_equal(np.concatenate([b0[k], b1[k]]), g[k])
    assert sorted(_docs_from_batches(full)) == sorted(_expected(list(load_documents(cfg, "val"))))


def test_file_formats_give_the_same_documents(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from array_record.python.array_record_module import ArrayRecordWriter

    texts = _doc_texts(6)
    lines = [json.dumps({"text": t, "id": i}) for i, t in enumerate(texts)]
    (tmp_path / "d.jsonl").write_text("\n".join(lines[:3]) + "\n\n" + "\n".join(lines[3:]) + "\n")
    pq.write_table(pa.table({"text": texts}), tmp_path / "d.parquet")
    writer = ArrayRecordWriter(str(tmp_path / "d.array_record"), "group_size:1")
    for i, t in enumerate(texts):  # alternate JSON records and plain-text records
        writer.write((lines[i] if i % 2 else t).encode())
    writer.close()
    for name in ("d.jsonl", "d.parquet", "d.array_record"):
        assert list(load_documents(_cfg([tmp_path / name]), "train")) == texts, name
    both = load_documents(_cfg([tmp_path / "d.jsonl", tmp_path / "d.parquet"]), "train")
    assert len(both) == 12


def test_holdout_by_hash_is_disjoint_and_stable(tmp_path):
    root = _write_txt(tmp_path / "c", _doc_texts(40))
    cfg = _cfg([root], val_fraction=0.25)
    train, val = load_documents(cfg, "train"), load_documents(cfg, "val")
    tr, va = set(train), set(val)
    assert tr and va and not tr & va and len(tr | va) == 40
    assert 4 <= len(va) <= 18
    moved = _write_txt(tmp_path / "elsewhere", _doc_texts(40))  # keys are relative paths
    assert set(load_documents(_cfg([moved], val_fraction=0.25), "val")) == va


def test_single_file_is_cut_into_train_head_and_val_tail(tmp_path):
    text = "".join(f"line {i} ü\n" for i in range(100))
    (tmp_path / "one.txt").write_text(text)
    cfg = _cfg([tmp_path / "one.txt"], val_fraction=0.1)
    train, val = load_documents(cfg, "train"), load_documents(cfg, "val")
    assert len(train) == len(val) == 1
    assert train[0] + val[0] == text and val[0].startswith("line ")
    assert 0.05 < len(val[0]) / len(text) < 0.15


def test_stdlib_corpus_split_disjoint_nonempty_and_fast():
    train, val = stdlib_documents("train"), stdlib_documents("val")
    files = lambda s: {s.readers[i].path for i in s.reader_ids}
    assert len(train) > 100 and len(val) >= 1 and not files(train) & files(val)
    assert all("site-packages" not in p for p in files(train) | files(val))
    assert train.text_bytes() > 1_000_000
    it = iter(make_dataset(DataConfig(), "train"))
    next(it)
    start = time.perf_counter()
    for _ in range(20):
        batch = next(it)
    assert 20 / (time.perf_counter() - start) >= 20  # batches/s, 16 x 256 bytes
    assert batch["inputs"].shape == (16, 256) and batch["mask"].all()
    assert _same(_take(make_dataset(DataConfig(), "val"), 3),
                 _take(make_dataset(DataConfig(), "val"), 3))


@pytest.mark.skipif(not SHAKESPEARE.is_file(), reason=f"{SHAKESPEARE} is not present")
def test_tinyshakespeare_real_file():
    cfg = _cfg([SHAKESPEARE], val_fraction=0.1, shuffle=False, seq_len=64, batch_size=4)
    train, val = load_documents(cfg, "train"), load_documents(cfg, "val")
    text = SHAKESPEARE.read_text(encoding="utf-8")
    assert "".join(train) + "".join(val) == text
    assert len(train) > 20  # one 1 MB file -> pieces of <= split_doc_bytes (different rows)
    batch = next(iter(make_dataset(cfg, "train")))
    for r in range(4):
        assert ByteTokenizer().decode(batch["targets"][r]) == train[r][:64]
    vb = _take(make_dataset(cfg, "val"))
    assert sum(b["mask"].sum() for b in vb) == len("".join(val).encode()) + len(val)


def test_split_long_documents_at_line_breaks(tmp_path):
    lines = [f"line {i} " + "é" * (i % 7) + "\n" for i in range(400)]
    root = _write_txt(tmp_path / "c", ["".join(lines), "short\n"])
    cfg = _cfg([root], shuffle=False, split_doc_bytes=300)
    docs = list(load_documents(cfg, "train"))
    assert "".join(docs[:-1]) == "".join(lines) and docs[-1] == "short\n"
    assert len(docs) > 10
    assert all(len(d.encode()) <= 300 and d.endswith("\n") for d in docs)
    whole = list(load_documents(_cfg([root], shuffle=False, split_doc_bytes=0), "train"))
    assert whole == ["".join(lines), "short\n"]


def _hf_tokenizer(path: Path, special=("<|endoftext|>",)) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=list(special),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(_doc_texts(30) + ["the quick brown fox"] * 5, trainer)
    tok.save(str(path))
    return path


def _sp_model(tmp_path: Path) -> Path:
    import sentencepiece as spm

    (tmp_path / "sp.txt").write_text("\n".join(f"the quick brown fox {i} jumps" for i in range(50)))
    spm.SentencePieceTrainer.train(
        input=str(tmp_path / "sp.txt"), model_prefix=str(tmp_path / "sp"), vocab_size=40,
        model_type="bpe", character_coverage=1.0, normalization_rule_name="identity",
        hard_vocab_limit=False, minloglevel=2)
    return tmp_path / "sp.model"


def test_byte_tokenizer_round_trip():
    tok = ByteTokenizer()
    text = "héllo\n\tworld ∑ 🙂"
    assert tok.decode(tok.encode(text)) == text and tok.vocab_size == 257 and tok.name == "byte"
    assert tok.decode([104, EOS, 105]) == "hi" and tok.decode([0xFF]) == "\ufffd"
    np.testing.assert_array_equal(tok.encode_array(text), tok.encode(text))


def test_hf_tokenizer_round_trip_and_pipeline(tmp_path):
    path = _hf_tokenizer(tmp_path / "tok.json")
    tok = build_tokenizer(_cfg(tokenizer="hf", tokenizer_path=str(path)))
    assert isinstance(tok, HFTokenizer) and tok.name.startswith("hf:") and len(tok.name) == 67
    text = "d7:hhh\nthe quick brown fox é"
    assert tok.decode(tok.encode(text)) == text
    assert tok.eos_id == 0 and tok.vocab_size <= 300
    texts = _doc_texts(5)
    cfg = _cfg([_write_txt(tmp_path / "c", texts)], tokenizer="hf", tokenizer_path=str(path))
    docs = _docs_from_batches(_take(make_dataset(cfg, "train", repeat=False)), tok.eos_id)
    assert sorted(docs) == sorted(_expected(texts, tok))
    with pytest.raises(DataError, match="no EOS token"):
        HFTokenizer(str(_hf_tokenizer(tmp_path / "noeos.json", special=())))


def test_sentencepiece_round_trip(tmp_path):
    path = _sp_model(tmp_path)
    tok = build_tokenizer(_cfg(tokenizer="sentencepiece", tokenizer_path=str(path)))
    assert isinstance(tok, SentencePieceTokenizer) and tok.name.startswith("sp:")
    text = "the brown fox 42 jumps quick"
    assert tok.decode(tok.encode(text)) == text and tok.eos_id == 2
    np.testing.assert_array_equal(tok.encode_array(text), tok.encode(text))


# bad input --------------------------------------------------------------------------------------

def _raises(cfg, name: str, *more: str, split="train"):
    with pytest.raises(DataError) as e:
        make_dataset(cfg, split)
    for s in (name, *more):
        assert s in str(e.value), str(e.value)


def test_bad_data_files_name_the_file(tmp_path):
    _raises(_cfg([tmp_path / "missing.txt"]), "missing.txt", "does not exist")
    (tmp_path / "empty.txt").write_bytes(b"")
    _raises(_cfg([tmp_path / "empty.txt"]), "empty.txt", "empty")
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "emptydir" / "meta.json").write_text("{}")  # refused extension: not data
    (tmp_path / "emptydir" / ".hidden").write_text("not data")
    _raises(_cfg([tmp_path / "emptydir"]), "emptydir", "no data files")
    (tmp_path / "latin1.txt").write_bytes(b"abc caf" + "é".encode("latin-1"))
    _raises(_cfg([tmp_path / "latin1.txt"]), "latin1.txt", "not UTF-8 text", "byte offset 7")
    (tmp_path / "d.jsonl").write_text('{"text": "a"}\n{"body": "b"}\n')
    _raises(_cfg([tmp_path / "d.jsonl"]), "d.jsonl", "line 2", "'text'")
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{"text": \n')
    _raises(_cfg([tmp_path / "bad.jsonl"]), "bad.jsonl", "line 2", "invalid JSON")
    (tmp_path / "d.csv").write_text("a,b\n")
    _raises(_cfg([tmp_path / "d.csv"]), "d.csv", "unsupported extension")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "d.parquet")
    _raises(_cfg([tmp_path / "d.parquet"]), "d.parquet", "'text'")
    (tmp_path / "junk.parquet").write_bytes(b"not parquet at all")
    _raises(_cfg([tmp_path / "junk.parquet"]), "junk.parquet")
    (tmp_path / "ok.txt").write_text("fine")
    _raises(_cfg([tmp_path / "ok.txt"]), "val_fraction", split="val")


@pytest.mark.parametrize("kind", ["hf", "sentencepiece"])
def test_bad_tokenizer_files_name_the_file(tmp_path, kind):
    (tmp_path / "ok.txt").write_text("fine")
    for name, content in (("absent.bin", None), ("empty.bin", b""), ("junk.bin", b"\x00junk{")):
        if content is not None:
            (tmp_path / name).write_bytes(content)
        cfg = _cfg([tmp_path / "ok.txt"], tokenizer=kind, tokenizer_path=str(tmp_path / name))
        _raises(cfg, name)
