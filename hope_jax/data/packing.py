"""Packing documents into fixed-size [B, T] language-model batches, with an exact resumable state.

Shapes: B batch rows, T sequence length, L tokens of one document.

Each parent element is one document as `doc_L1 = [eos] + tokens(d) + [eos]` (int32 [L + 2]). The
document contributes L + 1 (input, target) pairs: input `doc_L1[i]`, target `doc_L1[i + 1]`, at
position i. So the leading EOS acts as beginning-of-document (the first real token is predicted
from it), the last target is EOS, and no pair ever mixes two documents. Pairs of consecutive
documents are laid end to end and cut into rows of T; a document that does not fit in a row
continues at the start of the next row (next batch if needed).

`positions` is the position inside the *document* and keeps counting across rows: a row that starts
mid-document starts at that offset, so `positions == 0` marks true document starts (where fast
memory may be reset). `segment_ids` numbers the document pieces of each row 1, 2, ...; 0 is padding.

Grain's `ConcatThenSplitIterDataset` (0.2.18) does the same packing but restarts positions at 0 on
every split piece and keeps tuples in its state that no longer compare equal after a JSON round
trip; this packer's state is the parent's state before the current document plus an offset in it,
so restoring reads exactly one document and replays nothing.
"""

from __future__ import annotations

import copy

import grain
import numpy as np

__all__ = ["PackedBatchIterDataset"]


class PackedBatchIterDataset(grain.IterDataset):
    """Packs a stream of `[eos] + tokens + [eos]` documents into dict batches of [B, T] arrays.

    Yields `inputs`, `targets`, `positions`, `segment_ids` (int32 [B, T]) and `mask` (float32
    [B, T], 1 where the target is real). When the parent ends, the last partial batch is padded
    (zeros, mask 0, segment_ids 0) and then iteration stops; a padded batch is never all padding.
    """

    def __init__(self, parent: grain.IterDataset, *, batch_size: int, seq_len: int):
        super().__init__(parent)
        self._batch_size = int(batch_size)
        self._seq_len = int(seq_len)

    def __iter__(self) -> grain.DatasetIterator:
        return _PackedBatchIterator(self._parent.__iter__(), self._batch_size, self._seq_len)

    def __str__(self) -> str:
        return f"PackedBatchIterDataset(batch_size={self._batch_size}, seq_len={self._seq_len})"


class _PackedBatchIterator(grain.DatasetIterator):
    """State: {"parent": parent state before the current document, "offset": pairs consumed of it,
    "in_doc": whether there is a current document}. JSON-serializable if the parent's is."""

    def __init__(self, parent: grain.DatasetIterator, batch_size: int, seq_len: int):
        super().__init__(parent)
        self._b, self._t = batch_size, seq_len
        self._doc_L1: np.ndarray | None = None
        self._doc_state = None
        self._offset = 0

    def _fetch(self) -> bool:
        """Makes the next parent document current; False when the parent is exhausted."""
        state = self._parent.get_state()
        try:
            doc = next(self._parent)
        except StopIteration:
            self._doc_L1, self._doc_state, self._offset = None, None, 0
            return False
        self._doc_L1 = np.asarray(doc, np.int32)
        if self._doc_L1.ndim != 1 or len(self._doc_L1) < 2:
            raise ValueError(f"packer needs 1-D documents [eos, ..., eos], got {self._doc_L1!r}")
        self._doc_state, self._offset = state, 0
        return True

    def __next__(self) -> dict[str, np.ndarray]:
        b, t = self._b, self._t
        inputs_BT = np.zeros((b, t), np.int32)
        targets_BT = np.zeros((b, t), np.int32)
        positions_BT = np.zeros((b, t), np.int32)
        segment_ids_BT = np.zeros((b, t), np.int32)
        filled = exhausted = False
        for row in range(b):
            col, seg = 0, 0
            while col < t:
                done = self._doc_L1 is None or self._offset >= len(self._doc_L1) - 1
                if done and not self._fetch():
                    exhausted = True
                    break
                doc, off = self._doc_L1, self._offset
                k = min(t - col, len(doc) - 1 - off)
                seg += 1
                inputs_BT[row, col:col + k] = doc[off:off + k]
                targets_BT[row, col:col + k] = doc[off + 1:off + k + 1]
                positions_BT[row, col:col + k] = np.arange(off, off + k, dtype=np.int32)
                segment_ids_BT[row, col:col + k] = seg
                self._offset += k
                col += k
                filled = True
            if exhausted:
                break
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
        if self._doc_L1 is None:
            return {"parent": self._parent.get_state(), "offset": 0, "in_doc": False}
        return {"parent": copy.deepcopy(self._doc_state), "offset": int(self._offset),
                "in_doc": True}

    def set_state(self, state: dict) -> None:
        self._parent.set_state(copy.deepcopy(state["parent"]))
        self._doc_L1, self._doc_state, self._offset = None, None, 0
        if state["in_doc"]:
            if not self._fetch():
                raise ValueError(f"cannot restore packer state {state}: the document is gone")
            self._offset = int(state["offset"])

    def __str__(self) -> str:
        return f"PackedBatchIterator(batch_size={self._b}, seq_len={self._t})"
