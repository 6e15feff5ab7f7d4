"""Data file formats: plain text under any name, data.format, gzip / zstd, binary files refused."""

from __future__ import annotations

import dataclasses
import gzip
import json

import pytest
import zstandard

from hope_jax.config import ConfigError, DataConfig, validate
from hope_jax.data import DataError, load_documents, make_dataset


def _cfg(paths, **kw) -> DataConfig:
    base = dict(source="files", train_paths=tuple(str(p) for p in paths), val_fraction=0.0,
                seq_len=16, batch_size=2, shuffle=False)
    return dataclasses.replace(DataConfig(), **{**base, **kw})


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HOPE_JAX_CACHE", str(tmp_path / "cache"))


def test_any_utf8_name_is_text(tmp_path):
    texts = {"a.raw": "raw bytes é\n", "b.text": "some text\n", "c.md": "# title\n",
             "noext": "no extension at all\n", "d.txt": "plain\n"}
    for name, t in texts.items():
        (tmp_path / name).write_text(t, encoding="utf-8")
        assert list(load_documents(_cfg([tmp_path / name]), "train")) == [t], name
    # a directory takes every non-hidden file with a name that is not a refused format
    (tmp_path / ".hidden").write_bytes(b"\x00\xff")
    (tmp_path / "meta.json").write_text("{}")
    got = list(load_documents(_cfg([tmp_path], split_doc_bytes=0), "train"))
    assert got == [texts[k] for k in sorted(texts)]


def test_format_key_overrides_the_name(tmp_path):
    rows = [{"text": "first"}, {"text": "second"}]
    (tmp_path / "rows.dat").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    assert list(load_documents(_cfg([tmp_path / "rows.dat"]), "train")) == [
        (tmp_path / "rows.dat").read_text()]
    assert list(load_documents(_cfg([tmp_path / "rows.dat"], format="jsonl"), "train")) == [
        "first", "second"]
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="unsupported extension '.csv'.*data.format='text'"):
        load_documents(_cfg([tmp_path / "t.csv"]), "train")
    assert list(load_documents(_cfg([tmp_path / "t.csv"], format="text"), "train")) == [
        "a,b\n1,2\n"]
    with pytest.raises(ConfigError, match="format"):
        validate({"data": {"format": "csv"}})


def _compress(kind: str, data: bytes) -> bytes:
    return gzip.compress(data) if kind == "gzip" else zstandard.ZstdCompressor().compress(data)


@pytest.mark.parametrize("kind,suffix", [("gzip", ".gz"), ("zstd", ".zst")])
def test_compressed_text_and_jsonl_read_transparently(tmp_path, kind, suffix):
    text = "line one é\n" * 40 + "last line\n"
    rows = [{"text": f"doc {i} " + "x" * i} for i in range(5)]
    jsonl = ("\n".join(json.dumps(r) for r in rows) + "\n").encode()
    (tmp_path / f"c.txt{suffix}").write_bytes(_compress(kind, text.encode()))
    (tmp_path / f"r.jsonl{suffix}").write_bytes(_compress(kind, jsonl))
    (tmp_path / "unnamed").write_bytes(_compress(kind, text.encode()))  # found by magic bytes
    assert list(load_documents(_cfg([tmp_path / f"c.txt{suffix}"]), "train")) == [text]
    assert list(load_documents(_cfg([tmp_path / "unnamed"]), "train")) == [text]
    assert list(load_documents(_cfg([tmp_path / f"r.jsonl{suffix}"]), "train")) == [
        r["text"] for r in rows]
    # the single-file hold-out cuts the decompressed text, and packing reads the same bytes
    cfg = _cfg([tmp_path / f"c.txt{suffix}"], val_fraction=0.2)
    head, tail = (list(load_documents(cfg, s)) for s in ("train", "val"))
    assert head[0] + tail[0] == text and head[0] and tail[0]
    batch = next(iter(make_dataset(cfg, "train")))
    assert bytes(batch["targets"][0][:8].tolist()) == text.encode()[:8]


def test_binary_and_broken_files_give_one_error_naming_the_file(tmp_path):
    (tmp_path / "blob.raw").write_bytes(bytes(range(256)))
    with pytest.raises(DataError, match=r"'.*blob.raw' is not UTF-8 text: invalid byte 0x80"):
        load_documents(_cfg([tmp_path / "blob.raw"]), "train")
    (tmp_path / "zeros").write_bytes(b"abc\x00\x00\x00")  # valid UTF-8, still binary
    with pytest.raises(DataError, match=r"zeros' is binary, not text: NUL byte at byte offset 3"):
        load_documents(_cfg([tmp_path / "zeros"]), "train")
    (tmp_path / "cut.txt.gz").write_bytes(gzip.compress(b"hello world" * 100)[:30])
    with pytest.raises(DataError, match=r"cannot decompress gzip file '.*cut.txt.gz'"):
        load_documents(_cfg([tmp_path / "cut.txt.gz"]), "train")
    (tmp_path / "d.parquet.gz").write_bytes(gzip.compress(b"PAR1"))
    with pytest.raises(DataError, match="compressed parquet"):
        load_documents(_cfg([tmp_path / "d.parquet.gz"]), "train")
