"""`make_dataset`: documents -> shuffled, sharded, tokenized, packed [B, T] batches (grain).

Shapes: B rows per batch on this process, T = cfg.seq_len.

Pipeline (all grain, single-threaded, no worker processes):
  DocumentSource (+ RetrievalMix's synthetic S-NIAH documents in train when data.retrieval_mix)
  -(shard by process)-> shuffle(seed) -> repeat -> tokenize -> PackedBatchIterDataset
(B lanes: row r of every batch continues its own document, see packing.py)

Sharding. An infinite stream (`repeat=True`, the train default) is sharded by *document*: process
p reads documents p, p + P, ... of the corpus and reshuffles its share every epoch, so all
processes together read every document once per epoch. A finite pass (`repeat=False`, the val
default) is sharded by *row*: every process packs the same global stream of (B * P)-row batches
and keeps its own B rows, so all processes yield the same number of batches (needed to evaluate in
lockstep) and together see every row once. The last partial batch is padded (mask 0), not dropped.

Order. With cfg.shuffle the document order is a permutation derived from cfg.seed for train (a new
one each epoch) and from a fixed seed for val, so validation batches do not depend on the training
seed and are identical across calls. With shuffle=False the order is file order.
"""

from __future__ import annotations

import hashlib

import grain
import numpy as np

from hope_jax.data.errors import DataError
from hope_jax.data.packing import PackedBatchIterDataset
from hope_jax.data.retrieval import RetrievalMix
from hope_jax.data.sources import load_documents
from hope_jax.data.tokenizers import Tokenizer, build_tokenizer

__all__ = ["make_dataset"]

_VAL_SEED = 0  # validation order is fixed: comparable across training seeds


def _derive_seed(seed: int, split: str) -> int:
    digest = hashlib.blake2b(f"hope_jax/{split}/{seed}".encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


class _Tokenize:
    """text -> int32 [L + 2] = [eos] + tokens(text) + [eos] (see packing.py for why two EOS)."""

    def __init__(self, tokenizer: Tokenizer):
        self._tok = tokenizer
        self._eos = np.asarray([tokenizer.eos_id], np.int32)
        self._encode = getattr(tokenizer, "encode_array", None)

    def __call__(self, text: str) -> np.ndarray:
        if self._encode is not None:
            ids = self._encode(text)
        else:
            ids = np.asarray(self._tok.encode(text), np.int32)
        return np.concatenate([self._eos, ids.astype(np.int32, copy=False), self._eos])


class _TakeRows:
    """Keeps rows [lo, hi) of every array of a batch (row sharding of finite passes)."""

    def __init__(self, lo: int, hi: int):
        self._lo, self._hi = lo, hi

    def __call__(self, batch: dict) -> dict:
        return {k: v[self._lo:self._hi] for k, v in batch.items()}


def make_dataset(cfg, split: str, *, tokenizer: Tokenizer | None = None, process_index: int = 0,
                 process_count: int = 1, batch_size: int | None = None,
                 repeat: bool | None = None) -> grain.IterDataset:
    """Returns a grain `IterDataset` of packed LM batches for `split` of the data in `cfg`.

    `it = iter(ds)` yields dicts of numpy arrays: `inputs`, `targets`, `positions`, `segment_ids`
    (int32 [B, T]) and `mask` (float32 [B, T]); see `packing.py` for the exact convention (targets
    are the next token within a document; positions count from each document's start, continuing
    across rows; segment_ids 1, 2, ... per row, 0 = padding). `it.get_state()` is a small
    JSON-serializable dict; `iter(make_dataset(same args)).set_state(state)` continues exactly.

    Args:
      cfg: a `DataConfig`.
      split: "train" or "val".
      tokenizer: defaults to `build_tokenizer(cfg)`.
      process_index, process_count: this process and the number of processes (jax.process_*).
      batch_size: the global batch; defaults to cfg.batch_size. Each process gets
        batch_size // process_count rows.
      repeat: loop forever with a new order each epoch; defaults to True for train, False for val.

    Raises:
      DataError: bad split, batch not divisible by process_count, fewer documents than processes,
        or any data-file problem (see `sources.py`).
    """
    if split not in ("train", "val"):
        raise DataError(f"split must be 'train' or 'val', got {split!r}")
    if not 0 <= process_index < process_count:
        raise DataError(f"process_index={process_index} not in [0, process_count={process_count})")
    global_batch = batch_size or cfg.batch_size
    if global_batch % process_count:
        raise DataError(f"batch size {global_batch} is not divisible by {process_count} processes")
    rows = global_batch // process_count
    repeat = (split == "train") if repeat is None else repeat
    tokenizer = tokenizer if tokenizer is not None else build_tokenizer(cfg)

    docs = load_documents(cfg, split)
    if split == "train" and cfg.retrieval_mix:
        docs = RetrievalMix(docs, tokenizer, cfg.retrieval_mix, cfg.retrieval_len or cfg.seq_len,
                            cfg.seed)
    ds = grain.MapDataset.source(docs)
    if repeat and process_count > 1:
        ds = ds[process_index::process_count]
        if len(ds) == 0:
            raise DataError(f"{split} has {len(docs)} documents, fewer than {process_count} "
                            "processes")
    if cfg.shuffle:
        ds = ds.shuffle(seed=_derive_seed(cfg.seed if split == "train" else _VAL_SEED, split))
    if repeat:
        ds = ds.repeat(None)
    ds = ds.map(_Tokenize(tokenizer))
    # Random access by document index: the packer's state is a handful of indices (packing.py).
    # No prefetch threads: tokenizing is cheap next to a train step and threads on a 2-core host
    # compete with XLA; wrap in grain.experimental.ThreadPrefetchIterDataset to overlap if needed.
    packed_rows = rows if repeat else rows * process_count
    it_ds = PackedBatchIterDataset(ds, batch_size=packed_rows, seq_len=cfg.seq_len)
    if not repeat and process_count > 1:
        it_ds = it_ds.map(_TakeRows(process_index * rows, (process_index + 1) * rows))
    return it_ds
