"""Packing documents into fixed-size [B, T] language-model batches, with an exact resumable state.

Shapes: B batch rows (lanes), T sequence length, L tokens of one document.

Each document is `doc_L1 = [eos] + tokens(d) + [eos]` (int32 [L + 2]) and contributes L + 1
(input, target) pairs: input `doc_L1[i]`, target `doc_L1[i + 1]`, at position i. The leading EOS
acts as beginning-of-document (the first real token is predicted from it), the last target is
EOS, and no pair ever mixes two documents.

Lanes. Row r of every batch is fed by its own lane: a lane holds one document at a time, lays its
pairs end to end along the row, and when the document ends draws the next undrawn document of the
stream (documents are drawn in stream order, each exactly once). A document longer than a row
therefore continues in the *same row of the next batch*, and the B rows of a batch come from B
different places in the corpus. (Filling rows one after another instead would put consecutive
pieces of one long file in every row of a batch, which starves the gradient of diversity and makes
a few validation batches cover one or two files.)

`positions` is the position inside the *document* and keeps counting across batches, so
`positions == 0` marks true document starts (where fast memory may be reset). `segment_ids`
numbers the document pieces of each row 1, 2, ...; 0 is padding (only when a finite stream ends).

State: {"next": index of the next undrawn document, "lanes": [[document index or -1, pairs
consumed], ...]} -- JSON-serializable; restoring re-reads at most B documents by index.
"""

from __future__ import annotations

import grain
import numpy as np

__all__ = ["PackedBatchIterDataset"]


class PackedBatchIterDataset(grain.IterDataset):
    """Packs a random-access MapDataset of `[eos] + tokens + [eos]` documents into dict batches.

    Yields `inputs`, `targets`, `positions`, `segment_ids` (int32 [B, T]) and `mask` (float32
    [B, T], 1 where the target is real). For a finite parent, batches continue until every lane is
    empty (the tail is padded with mask 0); a batch is never all padding.
    """

    def __init__(self, docs: grain.MapDataset, *, batch_size: int, seq_len: int):
        super().__init__()
        self._docs = docs
        self._batch_size = int(batch_size)
        self._seq_len = int(seq_len)

    def __iter__(self) -> grain.DatasetIterator:
        return _LaneIterator(self._docs, self._batch_size, self._seq_len)

    def __str__(self) -> str:
        return f"PackedBatchIterDataset(batch_size={self._batch_size}, seq_len={self._seq_len})"


class _LaneIterator(grain.DatasetIterator):
    def __init__(self, docs: grain.MapDataset, batch_size: int, seq_len: int):
        super().__init__()
        self._docs, self._b, self._t = docs, batch_size, seq_len
        self._n = len(docs)
        self._next = 0
        self._lane_idx = [-1] * batch_size  # document index held by each lane (-1: none)
        self._lane_off = [0] * batch_size  # pairs of it already emitted
        self._lane_doc: list[np.ndarray | None] = [None] * batch_size

    def _load(self, idx: int) -> np.ndarray:
        doc = np.asarray(self._docs[idx], np.int32)
        if doc.ndim != 1 or len(doc) < 2:
            raise ValueError(f"packer needs 1-D documents [eos, ..., eos], got {doc!r}")
        return doc

    def _draw(self, lane: int) -> bool:
        """Gives `lane` the next document of the stream; False when the stream is exhausted."""
        if self._next >= self._n:
            self._lane_idx[lane], self._lane_doc[lane], self._lane_off[lane] = -1, None, 0
            return False
        idx = self._next
        self._next += 1
        self._lane_idx[lane], self._lane_doc[lane], self._lane_off[lane] = idx, self._load(idx), 0
        return True

    def __next__(self) -> dict[str, np.ndarray]:
        b, t = self._b, self._t
        inputs_BT = np.zeros((b, t), np.int32)
        targets_BT = np.zeros((b, t), np.int32)
        positions_BT = np.zeros((b, t), np.int32)
        segment_ids_BT = np.zeros((b, t), np.int32)
        filled = False
        for row in range(b):
            col, seg = 0, 0
            while col < t:
                doc, off = self._lane_doc[row], self._lane_off[row]
                if doc is None or off >= len(doc) - 1:
                    if not self._draw(row):
                        break
                    doc, off = self._lane_doc[row], 0
                k = min(t - col, len(doc) - 1 - off)
                seg += 1
                inputs_BT[row, col:col + k] = doc[off:off + k]
                targets_BT[row, col:col + k] = doc[off + 1:off + k + 1]
                positions_BT[row, col:col + k] = np.arange(off, off + k, dtype=np.int32)
                segment_ids_BT[row, col:col + k] = seg
                self._lane_off[row] = off + k
                col += k
                filled = True
        if not filled:
            raise StopIteration
        return {
            "inputs": inputs_BT,
            "targets": targets_BT,
            "positions": positions_BT,
            "segment_ids": segment_ids_BT,
            "mask": (segment_ids_BT > 0).astype(np.float32),
        }

    def get_state(self) -> dict:
        return {"next": int(self._next),
                "lanes": [[int(i), int(o)] for i, o in zip(self._lane_idx, self._lane_off)]}

    def set_state(self, state: dict) -> None:
        lanes = state["lanes"]
        if len(lanes) != self._b:
            raise ValueError(f"packer state has {len(lanes)} lanes, this pipeline has {self._b} "
                             "(the batch size or process count changed)")
        self._next = int(state["next"])
        for lane, (idx, off) in enumerate(lanes):
            self._lane_idx[lane], self._lane_off[lane] = int(idx), int(off)
            self._lane_doc[lane] = self._load(int(idx)) if idx >= 0 else None

    def __str__(self) -> str:
        return f"PackedBatchIterator(batch_size={self._b}, seq_len={self._t})"
