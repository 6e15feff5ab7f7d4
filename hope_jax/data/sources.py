"""Document sources: the embedded Python-stdlib corpus and user files, split into train / val.

A `DocumentSource` is a grain random-access data source (`len(src)`, `src[i] -> str`) over a compact
index of documents (reader id, start, stop per document), so a corpus of any size is indexed once
and each document is read from disk only when the pipeline asks for it.

Train / val hold-out (when no `val_paths` are given) is by a stable 64-bit hash of the document's
key: the file's path relative to the configured path (or directory) plus the document's number in
the file. A document is in val when hash / 2**64 < val_fraction; val gets at least one document.
A corpus that is a single text file (e.g. tinyshakespeare's input.txt) is instead cut at the first
newline after (1 - val_fraction) of its bytes: the head trains, the tail validates.
"""

from __future__ import annotations

import functools
import hashlib
import os
import sysconfig

import numpy as np

from hope_jax.data.errors import DataError
from hope_jax.data.formats import REFUSED
from hope_jax.data.readers import TextReader, make_reader

__all__ = ["DocumentSource", "file_documents", "load_documents", "stdlib_documents"]

# The stdlib corpus: every non-empty `.py` file under sysconfig's stdlib dir, except these dirs.
# Test suites are dropped: some distributions strip them (the corpus should not depend on that),
# and they hold deliberately broken files (bad encodings, bad syntax).
_STDLIB_SKIP_DIRS = frozenset(
    {"site-packages", "dist-packages", "__pycache__", "test", "tests", "idle_test"})


class DocumentSource:
    """Random-access documents: `len(src)`, `src[i] -> str` (a grain `RandomAccessDataSource`).

    Attributes:
      readers: one reader per file (see `readers.py`).
      reader_ids, starts, stops: int arrays [N]; document i is `readers[reader_ids[i]].read(
        starts[i], stops[i])` (a byte range for text/jsonl, a row number for parquet/ArrayRecord).
      hashes: uint64 [N], the stable hash of each document's key (train/val hold-out).
      max_doc_bytes: documents are cut to this many UTF-8 bytes; 0 = no limit.
    """

    def __init__(self, readers, reader_ids, starts, stops, hashes, max_doc_bytes: int = 0):
        self.readers = list(readers)
        self.reader_ids = np.asarray(reader_ids, np.int64)
        self.starts = np.asarray(starts, np.int64)
        self.stops = np.asarray(stops, np.int64)
        self.hashes = np.asarray(hashes, np.uint64)
        self.max_doc_bytes = int(max_doc_bytes)

    def __len__(self) -> int:
        return len(self.reader_ids)

    def __getitem__(self, i: int) -> str:
        reader = self.readers[self.reader_ids[i]]
        a, b = int(self.starts[i]), int(self.stops[i])
        limit = self.max_doc_bytes
        if limit and reader.cuttable:
            b = min(b, a + limit)  # read no more than needed
        text = reader.read(a, b)
        if limit and len(text) * 4 > limit:  # only then can the UTF-8 exceed the limit
            data = text.encode("utf-8")
            if len(data) > limit:
                text = data[:limit].decode("utf-8", errors="ignore")
        return text

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def select(self, keep_N: np.ndarray) -> DocumentSource:
        """The documents where the boolean mask `keep_N` is true."""
        return DocumentSource(self.readers, self.reader_ids[keep_N], self.starts[keep_N],
                              self.stops[keep_N], self.hashes[keep_N], self.max_doc_bytes)

    def split_long(self, max_bytes: int) -> DocumentSource:
        """Cuts byte-range documents longer than `max_bytes` into pieces at line breaks.

        A long file (a book, a big module) is then several documents, so that different rows of
        a batch see different text even when the corpus is one file (packing.py lanes).
        Row documents (jsonl/parquet/ArrayRecord records) are kept whole.
        """
        if not max_bytes or not len(self):
            return self
        ids, starts, stops, hashes = [], [], [], []
        for i in range(len(self)):
            reader = self.readers[self.reader_ids[i]]
            a, b = int(self.starts[i]), int(self.stops[i])
            cuts = [a]
            if reader.cuttable and b - a > max_bytes:
                data = reader.read_bytes(a, b)
                while len(data) - (cuts[-1] - a) > max_bytes:
                    off = cuts[-1] - a
                    cuts.append(a + off + _cut_before(data[off:], max_bytes))
            cuts.append(b)
            for lo, hi in zip(cuts[:-1], cuts[1:]):
                ids.append(self.reader_ids[i])
                starts.append(lo)
                stops.append(hi)
                hashes.append(self.hashes[i])
        return DocumentSource(self.readers, ids, starts, stops, hashes, self.max_doc_bytes)

    def text_bytes(self) -> int:
        """Total bytes of byte-range documents (txt / stdlib); row documents count 0."""
        cut = np.array([r.cuttable for r in self.readers], bool)
        if not len(self):
            return 0
        sizes = np.where(cut[self.reader_ids], self.stops - self.starts, 0)
        return int(sizes.sum())

    def __repr__(self) -> str:
        return f"DocumentSource({len(self)} documents in {len(self.readers)} files)"


def _file_hashes(keys: list[str]) -> np.ndarray:
    out = [int.from_bytes(hashlib.blake2b(k.encode("utf-8"), digest_size=8).digest(), "little")
           for k in keys]
    return np.asarray(out, np.uint64)


def _doc_hashes(file_hash_N: np.ndarray, index_N: np.ndarray) -> np.ndarray:
    """splitmix64(file hash + golden * (index + 1)): stable across runs, machines and numpy."""
    x = file_hash_N.astype(np.uint64) + (index_N.astype(np.uint64) + np.uint64(1)) * np.uint64(
        0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _build(files: list[tuple[str, str]], make, max_doc_bytes: int) -> DocumentSource:
    """Indexes `files` ((path, key) pairs) with readers from `make(path)`."""
    readers, ids, starts, stops, index = [], [], [], [], []
    for i, (path, _) in enumerate(files):
        reader = make(path)
        a, b = reader.index()
        readers.append(reader)
        ids.append(np.full(len(a), i, np.int64))
        starts.append(a)
        stops.append(b)
        index.append(np.arange(len(a), dtype=np.int64))
    ids_N = np.concatenate(ids)
    hashes = _doc_hashes(_file_hashes([k for _, k in files])[ids_N], np.concatenate(index))
    return DocumentSource(readers, ids_N, np.concatenate(starts), np.concatenate(stops), hashes,
                          max_doc_bytes)


@functools.lru_cache(maxsize=4)
def _stdlib_files(root: str) -> tuple[tuple[str, str], ...]:
    files = []
    for d, dirs, names in os.walk(root):
        dirs[:] = sorted(x for x in dirs if x not in _STDLIB_SKIP_DIRS)
        for name in names:
            path = os.path.join(d, name)
            if name.endswith(".py") and os.path.isfile(path) and os.path.getsize(path) > 0:
                files.append((path, os.path.relpath(path, root).replace(os.sep, "/")))
    return tuple(sorted(files, key=lambda f: f[1]))


def stdlib_documents(split: str, val_fraction: float = 0.02, *,
                     max_doc_bytes: int = 0) -> DocumentSource:
    """The embedded corpus: the Python standard library's `.py` sources, one document per file.

    Files are found under `sysconfig.get_paths()["stdlib"]`, sorted by relative path, skipping
    `site-packages`, `__pycache__` and test-suite dirs (`test`, `tests`, `idle_test`) and empty
    files. A file is in val when the stable hash of its relative path falls under `val_fraction`
    (at least one file). Bytes that are not UTF-8 are replaced (U+FFFD), never an error.

    Args:
      split: "train" or "val".
      val_fraction: share of files held out for validation.
      max_doc_bytes: cut documents to this many bytes; 0 = no limit.
    """
    root = sysconfig.get_paths()["stdlib"]
    files = list(_stdlib_files(root))
    if not files:
        raise DataError(f"no .py files under the stdlib dir {root!r}; use data.source='files'")
    src = _build(files, lambda p: TextReader(p, lenient=True), max_doc_bytes)
    return _holdout(src, split, val_fraction, "the stdlib corpus")


def _expand(paths) -> list[tuple[str, str]]:
    """Files and directories -> sorted (path, key) pairs; key = path relative to the entry.

    A directory contributes every file under it except hidden ones (`.name`) and those with an
    extension of a format we do not read (`formats.REFUSED`: .json, .csv, ...).
    """
    out = []
    for p in paths:
        p = os.fspath(p)
        if not os.path.exists(p):
            raise DataError(f"data path {p!r} does not exist")
        if not os.path.isdir(p):
            out.append((p, os.path.basename(p)))
            continue
        found = []
        for d, dirs, names in os.walk(p):
            dirs[:] = sorted(x for x in dirs if not x.startswith("."))
            for name in names:
                if not name.startswith(".") and os.path.splitext(name)[1].lower() not in REFUSED:
                    path = os.path.join(d, name)
                    found.append((path, os.path.relpath(path, p).replace(os.sep, "/")))
        if not found:
            raise DataError(f"directory {p!r} holds no data files")
        out.extend(sorted(found, key=lambda f: f[1]))
    return out


def file_documents(paths, text_field: str = "text", *, max_doc_bytes: int = 0,
                   fmt: str = "auto") -> DocumentSource:
    """All documents of `paths` (files or directories, searched recursively), in path order.

    `fmt` is `data.format`: "auto" picks each file's format by its name (see `formats.py`).

    Raises:
      DataError: a path is missing, a directory holds no data files, a file is empty, not UTF-8
        text, has a refused extension, cannot be decompressed or has records without `text_field`.
    """
    if not paths:
        raise DataError("no data paths given (data.train_paths)")
    return _build(_expand(paths), lambda p: make_reader(p, text_field, fmt), max_doc_bytes)


def _cut_point(data: bytes, target: int) -> int:
    """A byte offset in (0, len) near `target`: after a newline if possible, never mid-character."""
    n = len(data)
    target = min(max(target, 1), n - 1)
    j = data.find(b"\n", target)
    if 0 <= j < n - 1:
        return j + 1
    return _cut_before(data, target)


def _cut_before(data: bytes, limit: int) -> int:
    """A cut in (0, limit]: after the last newline before `limit`, else at a UTF-8 boundary."""
    j = data.rfind(b"\n", 0, limit)
    if j >= 0:
        return j + 1
    while limit > 1 and (data[limit] & 0xC0) == 0x80:  # UTF-8 continuation byte
        limit -= 1
    return limit


def _holdout(src: DocumentSource, split: str, val_fraction: float, what: str) -> DocumentSource:
    if split not in ("train", "val"):
        raise DataError(f"split must be 'train' or 'val', got {split!r}")
    if val_fraction <= 0:
        if split == "val":
            raise DataError(f"no validation documents in {what}: set data.val_paths or "
                            "data.val_fraction > 0")
        return src
    is_val = (src.hashes >> np.uint64(11)).astype(np.float64) * 2.0**-53 < val_fraction
    if not is_val.any():
        is_val[np.argmin(src.hashes)] = True
    if is_val.all():
        if len(src) > 1:
            is_val[np.argmax(src.hashes)] = False
        else:
            reader = src.readers[src.reader_ids[0]]
            a, b = int(src.starts[0]), int(src.stops[0])
            if not reader.cuttable or b - a < 2:
                raise DataError(f"{what} is a single document ({reader.path!r}); cannot hold out "
                                "validation: set data.val_paths or data.val_fraction=0")
            cut = a + _cut_point(reader.read_bytes(a, b), int((b - a) * (1 - val_fraction)))
            lo, hi = (a, cut) if split == "train" else (cut, b)
            return DocumentSource(src.readers, src.reader_ids, [lo], [hi], src.hashes,
                                  src.max_doc_bytes)
    return src.select(is_val if split == "val" else ~is_val)


def load_documents(cfg, split: str) -> DocumentSource:
    """The documents of `split` ('train' | 'val') described by a `DataConfig`."""
    return _load_whole(cfg, split).split_long(cfg.split_doc_bytes)


def _load_whole(cfg, split: str) -> DocumentSource:
    if split not in ("train", "val"):
        raise DataError(f"split must be 'train' or 'val', got {split!r}")
    if cfg.source == "stdlib":
        return stdlib_documents(split, cfg.val_fraction, max_doc_bytes=cfg.max_doc_bytes)
    if cfg.source != "files":
        raise DataError(f"unknown data.source {cfg.source!r}; use 'stdlib' or 'files'")
    kw = dict(max_doc_bytes=cfg.max_doc_bytes, fmt=cfg.format)
    if split == "val" and cfg.val_paths:
        return file_documents(cfg.val_paths, cfg.text_field, **kw)
    src = file_documents(cfg.train_paths, cfg.text_field, **kw)
    if cfg.val_paths:
        return src
    return _holdout(src, split, cfg.val_fraction, f"data.train_paths={list(cfg.train_paths)}")
