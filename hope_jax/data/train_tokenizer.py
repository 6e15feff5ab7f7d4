"""Train a byte-level BPE tokenizer on your corpus (HF `tokenizers`), for `data.tokenizer=hf`.

  python -m hope_jax.data.train_tokenizer --input=corpus/ --vocab_size=32000 --out=tok.json
  python train.py --config=configs/tiny.py --config.data.source=files \
    --config.data.train_paths=corpus/ --config.data.tokenizer=hf \
    --config.data.tokenizer_path=tok.json --config.model.vocab_size=32000

The input is read exactly as training reads it (`file_documents`: text under any name, jsonl,
parquet, ArrayRecord, gzip / zstd; `--text_field`, `--format` as `data.text_field` /
`data.format`). The model is GPT-2-style byte-level BPE: text is split by the ByteLevel
pre-tokenizer and every byte has a token of its own (the 256-symbol initial alphabet), so any
string encodes with no unknown token and decodes back exactly. Id 0 is `<|endoftext|>`, the EOS /
document separator `HFTokenizer` looks for. Prints a JSON summary on stdout.
"""

from __future__ import annotations

import os

from hope_jax.data.errors import DataError
from hope_jax.data.sources import file_documents

__all__ = ["EOS", "train_tokenizer"]

EOS = "<|endoftext|>"
_MIN_VOCAB = 257  # 256 byte tokens + EOS


def train_tokenizer(paths, vocab_size: int, out: str, *, text_field: str = "text",
                    fmt: str = "auto", min_frequency: int = 2, max_doc_bytes: int = 0,
                    overwrite: bool = False) -> dict:
    """Trains byte-level BPE on the documents of `paths` and writes tokenizer.json to `out`.

    Args:
      paths: files or directories (as `data.train_paths`).
      vocab_size: target vocabulary including the 256 byte tokens and EOS (>= 257); the result
        is smaller when the corpus has fewer merges to offer.
      out: the tokenizer.json to write (refused if it exists, unless `overwrite`).
      text_field, fmt, max_doc_bytes: as `data.text_field`, `data.format`, `data.max_doc_bytes`.
      min_frequency: a pair is merged only if it occurs at least this often.

    Returns:
      {"out", "vocab_size", "eos_id", "documents"}.

    Raises:
      DataError: bad input files (see `file_documents`), vocab_size < 257, or `out` exists.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if vocab_size < _MIN_VOCAB:
        raise DataError(f"--vocab_size={vocab_size} must be >= {_MIN_VOCAB} (256 bytes + EOS)")
    if os.path.exists(out) and not overwrite:
        raise DataError(f"--out={out} exists; remove it or pass --overwrite")
    docs = file_documents(paths, text_field, max_doc_bytes=max_doc_bytes, fmt=fmt)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=[EOS], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(iter(docs), trainer=trainer, length=len(docs))
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    tmp = f"{out}.tmp"
    tok.save(tmp)
    os.replace(tmp, out)  # never a half-written tokenizer.json
    return {"out": out, "vocab_size": tok.get_vocab_size(), "eos_id": tok.token_to_id(EOS),
            "documents": len(docs)}


def main(argv):
    del argv
    from absl import flags

    from hope_jax import cli

    f = flags.FLAGS
    cli.print_json(cli.run_guarded(
        train_tokenizer, f.input, f.vocab_size, f.out, text_field=f.text_field, fmt=f.format,
        min_frequency=f.min_frequency, max_doc_bytes=f.max_doc_bytes, overwrite=f.overwrite))


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_list("input", None, "Files or directories of training text.", required=True)
    flags.DEFINE_integer("vocab_size", 32000, "Vocabulary size (>= 257, incl. bytes and EOS).")
    flags.DEFINE_string("out", None, "tokenizer.json to write.", required=True)
    flags.DEFINE_string("text_field", "text", "Text field of jsonl / parquet records.")
    flags.DEFINE_string("format", "auto", "File format: auto, text, jsonl, parquet, arrayrecord.")
    flags.DEFINE_integer("min_frequency", 2, "Merge pairs seen at least this often.")
    flags.DEFINE_integer("max_doc_bytes", 0, "Cut documents to this many bytes (0 = whole).")
    flags.DEFINE_bool("overwrite", False, "Replace an existing --out file.")
    app.run(main)
