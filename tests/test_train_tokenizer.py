"""`python -m hope_jax.data.train_tokenizer`: byte-level BPE on a small local corpus, loaded by
the `data.tokenizer=hf` path, lossless on any text, and run through the packed pipeline."""

from __future__ import annotations

import dataclasses
import gzip
import json
import subprocess
import sys

import pytest

from hope_jax.config import DataConfig
from hope_jax.data import DataError, HFTokenizer, build_tokenizer, make_dataset
from hope_jax.data.train_tokenizer import train_tokenizer
from tests.helpers import ROOT

WORDS = ["the", "quick", "brown", "fox", "jumps", "over", "the", "lazy", "dog", "while", "the",
         "cat", "sleeps"]


def _corpus(root):
    root.mkdir()
    lines = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(9)) for i in range(60)]
    (root / "a.txt").write_text("\n".join(lines[:30]) + "\n")
    (root / "notes.md").write_text("# notes\n" + "\n".join(lines[30:45]) + "\n")
    rows = "".join(json.dumps({"text": t}) + "\n" for t in lines[45:])
    (root / "b.jsonl.gz").write_bytes(gzip.compress(rows.encode()))
    return root


def _cfg(corpus, tok_path) -> DataConfig:
    return dataclasses.replace(DataConfig(), source="files", train_paths=(str(corpus),),
                               val_fraction=0.0, seq_len=16, batch_size=2, tokenizer="hf",
                               tokenizer_path=str(tok_path))


def test_cli_trains_a_tokenizer_that_loads_and_round_trips(tmp_path, monkeypatch):
    monkeypatch.setenv("HOPE_JAX_CACHE", str(tmp_path / "cache"))
    corpus, out = _corpus(tmp_path / "corpus"), tmp_path / "tok.json"
    cmd = [sys.executable, "-m", "hope_jax.data.train_tokenizer", f"--input={corpus}",
           "--vocab_size=300", f"--out={out}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["documents"] == 1 + 1 + 15 and summary["eos_id"] == 0
    assert 257 < summary["vocab_size"] <= 300
    tok = build_tokenizer(_cfg(corpus, out))  # the existing --config.data.tokenizer=hf path
    assert isinstance(tok, HFTokenizer) and tok.eos_id == 0 and tok.vocab_size <= 300
    seen = "the quick brown fox jumps over the lazy dog"
    assert len(tok.encode(seen)) < len(seen.encode()) / 2  # merges learned from the corpus
    for text in (seen, "unseen: 日本語 🙂 \x00\x01\t\r\n ÿ", "  leading  spaces  "):
        assert tok.decode(tok.encode(text)) == text  # every byte is representable
    batch = next(iter(make_dataset(_cfg(corpus, out), "train")))
    assert batch["inputs"].shape == (2, 16) and int(batch["inputs"].max()) < tok.vocab_size
    # an existing --out is never overwritten without --overwrite: one error line, exit 2
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and again.stderr.strip().splitlines() == [
        f"error: --out={out} exists; remove it or pass --overwrite"]


def test_bad_arguments(tmp_path):
    corpus = _corpus(tmp_path / "corpus")
    with pytest.raises(DataError, match="vocab_size=100 must be >= 257"):
        train_tokenizer([str(corpus)], 100, str(tmp_path / "t.json"))
    (tmp_path / "bin.raw").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(DataError, match="bin.raw' is not UTF-8 text"):
        train_tokenizer([str(tmp_path / "bin.raw")], 300, str(tmp_path / "t.json"))
    assert not (tmp_path / "t.json").exists()
