"""Tokenizers: byte-level (no files needed), HF `tokenizers` JSON, and sentencepiece.

Every tokenizer has `vocab_size`, `eos_id`, `encode(text) -> list[int]`, `decode(ids) -> str`,
`name` (a string that changes when the tokenizer changes, stored with checkpoints) and the fast
path `encode_array(text) -> int32 [L]` used by the pipeline.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable
from typing import Protocol, runtime_checkable

import numpy as np

from hope_jax.data.errors import DataError

__all__ = ["ByteTokenizer", "HFTokenizer", "SentencePieceTokenizer", "Tokenizer",
           "build_tokenizer"]

# Tried in order when an HF tokenizer has no `eos_token` in a sibling tokenizer_config.json.
_EOS_CANDIDATES = ("<|endoftext|>", "</s>", "<eos>", "<|end_of_text|>", "<|eot_id|>", "[EOS]",
                   "<|im_end|>", "[SEP]")


@runtime_checkable
class Tokenizer(Protocol):
    """What the pipeline and the trainer need from a tokenizer."""

    name: str
    vocab_size: int
    eos_id: int

    def encode(self, text: str) -> list[int]: ...

    def decode(self, ids: Iterable[int]) -> str: ...


class ByteTokenizer:
    """UTF-8 bytes: ids 0..255 are bytes, 256 is EOS (the document separator); vocab 257."""

    name = "byte"
    vocab_size = 257
    eos_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_array(self, text: str) -> np.ndarray:
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.int32)

    def decode(self, ids: Iterable[int]) -> str:
        """Ignores ids >= 256 (EOS); invalid UTF-8 sequences become U+FFFD."""
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")

    def __repr__(self) -> str:
        return "ByteTokenizer()"


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _check_file(path: str, kind: str) -> None:
    if not path:
        raise DataError(f"{kind} tokenizer needs a file path (data.tokenizer_path)")
    if not os.path.isfile(path):
        raise DataError(f"tokenizer file {path!r} does not exist")
    if os.path.getsize(path) == 0:
        raise DataError(f"tokenizer file {path!r} is empty")


class HFTokenizer:
    """A Hugging Face `tokenizers` tokenizer.json.

    EOS is the `eos_token` of a `tokenizer_config.json` next to the file if there is one, else the
    first of `<|endoftext|>`, `</s>`, `<eos>`, ... present in the vocabulary.
    """

    def __init__(self, path: str):
        import tokenizers

        _check_file(path, "hf")
        try:
            self._tok = tokenizers.Tokenizer.from_file(path)
        except Exception as e:  # the library raises a bare Exception on bad JSON
            raise DataError(f"cannot load HF tokenizer {path!r}: {e}") from e
        self.path = path
        self.name = f"hf:{_sha256(path)}"
        self.vocab_size = int(self._tok.get_vocab_size(with_added_tokens=True))
        self.eos_id = self._find_eos(path)

    def _find_eos(self, path: str) -> int:
        candidates = list(_EOS_CANDIDATES)
        cfg_path = os.path.join(os.path.dirname(path), "tokenizer_config.json")
        if os.path.isfile(cfg_path):
            try:
                with open(cfg_path, encoding="utf-8") as f:
                    eos = json.load(f).get("eos_token")
            except (OSError, ValueError) as e:
                raise DataError(f"cannot read {cfg_path!r}: {e}") from e
            if isinstance(eos, dict):
                eos = eos.get("content")
            if isinstance(eos, str):
                candidates.insert(0, eos)
        for tok in candidates:
            tid = self._tok.token_to_id(tok)
            if tid is not None:
                return int(tid)
        raise DataError(
            f"HF tokenizer {path!r} has no EOS token (looked for {candidates}); add one, e.g. "
            "tokenizer.add_special_tokens(['<|endoftext|>'])"
        )

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def encode_array(self, text: str) -> np.ndarray:
        return np.asarray(self.encode(text), dtype=np.int32)

    def decode(self, ids: Iterable[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def __repr__(self) -> str:
        return f"HFTokenizer({self.path!r})"


class SentencePieceTokenizer:
    """A sentencepiece `.model` file; EOS is the model's `eos_id()` (must be enabled)."""

    def __init__(self, path: str):
        import sentencepiece

        _check_file(path, "sentencepiece")
        try:
            self._sp = sentencepiece.SentencePieceProcessor(model_file=path)
        except Exception as e:  # RuntimeError/OSError depending on the version
            raise DataError(f"cannot load sentencepiece model {path!r}: {e}") from e
        self.path = path
        self.name = f"sp:{_sha256(path)}"
        self.vocab_size = int(self._sp.get_piece_size())
        eos = int(self._sp.eos_id())
        if eos < 0:
            raise DataError(
                f"sentencepiece model {path!r} has no EOS piece (eos_id=-1); retrain with eos_id>=0"
            )
        self.eos_id = eos

    def encode(self, text: str) -> list[int]:
        return list(self._sp.encode(text, out_type=int))

    def encode_array(self, text: str) -> np.ndarray:
        return np.asarray(self._sp.encode(text, out_type=int), dtype=np.int32)

    def decode(self, ids: Iterable[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    def __repr__(self) -> str:
        return f"SentencePieceTokenizer({self.path!r})"


def build_tokenizer(cfg) -> Tokenizer:
    """Returns the tokenizer named by `cfg.tokenizer` ('byte' | 'hf' | 'sentencepiece').

    Args:
      cfg: a `DataConfig` (only `tokenizer` and `tokenizer_path` are read).

    Raises:
      DataError: the tokenizer file is missing, empty, unreadable or has no EOS token.
    """
    kind = cfg.tokenizer
    if kind == "byte":
        return ByteTokenizer()
    if kind == "hf":
        return HFTokenizer(cfg.tokenizer_path)
    if kind == "sentencepiece":
        return SentencePieceTokenizer(cfg.tokenizer_path)
    raise DataError(f"unknown tokenizer {kind!r}; use 'byte', 'hf' or 'sentencepiece'")
