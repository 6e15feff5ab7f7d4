"""Per-format document readers: index a file into documents, then read any document by index.

A document is `(reader, a, b)`: for text and jsonl files `[a, b)` is a byte range of the file (the
whole file, or one line); for parquet and ArrayRecord files `a` is the row / record number. Which
reader a file gets and how compressed files are read: `formats.py`. Text and jsonl files are
validated when indexed (UTF-8 without NUL bytes, JSON, text field), so a bad file fails before
training starts; parquet files check their schema when indexed; ArrayRecord records are checked
when read (indexing them all up front would read the whole, possibly huge, file).
"""

from __future__ import annotations

import json
import os

import numpy as np

from hope_jax.data.errors import DataError
from hope_jax.data.formats import file_format, plain_path

__all__ = ["ArrayRecordReader", "JsonlReader", "ParquetReader", "TextReader", "make_reader"]


def _decode(data: bytes, path: str, where: str = "") -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(
            f"{path!r}{where} is not UTF-8 text: invalid byte 0x{data[e.start]:02x} at byte offset "
            f"{e.start}{' of the record' if where else ''}"
        ) from None


def _text(data: bytes, path: str) -> None:
    """Checks that a whole file is text: UTF-8 and no NUL byte (binary may be valid UTF-8)."""
    _decode(data, path)
    nul = data.find(b"\0")
    if nul >= 0:
        raise DataError(f"{path!r} is binary, not text: NUL byte at byte offset {nul}; give "
                        "data.format for a jsonl/parquet/arrayrecord file with another name")


def _nonempty_size(path: str, file: str | None = None) -> int:
    size = os.path.getsize(file or path)
    if size == 0:
        raise DataError(f"data file {path!r} is empty")
    return size


class TextReader:
    """A text file is one document. `lenient` replaces bad UTF-8 instead of failing (stdlib).

    `path` names the file in messages; `file` is what is read (its decompressed copy, if any).
    """

    kind = "txt"
    cuttable = True  # a document may be split at a byte offset (single-document hold-out)

    def __init__(self, path: str, *, lenient: bool = False, file: str | None = None):
        self.path, self.lenient, self.file = path, lenient, file or path

    def index(self) -> tuple[np.ndarray, np.ndarray]:
        size = _nonempty_size(self.path, self.file)
        if not self.lenient:
            with open(self.file, "rb") as f:
                _text(f.read(), self.path)
        return np.zeros(1, np.int64), np.full(1, size, np.int64)

    def read_bytes(self, a: int, b: int) -> bytes:
        with open(self.file, "rb") as f:
            f.seek(a)
            return f.read(b - a)

    def read(self, a: int, b: int) -> str:
        data = self.read_bytes(a, b)
        if self.lenient:
            return data.decode("utf-8", errors="replace")
        # Validated at index time; only a range cut mid-character (max_doc_bytes) can fail here.
        return data.decode("utf-8", errors="ignore")


class JsonlReader:
    """A .jsonl file: one document per non-blank line, the text in `text_field`."""

    kind = "jsonl"
    cuttable = False

    def __init__(self, path: str, text_field: str, file: str | None = None):
        self.path, self.text_field, self.file = path, text_field, file or path

    def _text(self, obj, where: str) -> str:
        if not isinstance(obj, dict) or self.text_field not in obj:
            got = sorted(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
            raise DataError(
                f"{self.path!r} {where}: no text field {self.text_field!r} (got {got}); "
                "set data.text_field"
            )
        text = obj[self.text_field]
        if not isinstance(text, str):
            raise DataError(f"{self.path!r} {where}: field {self.text_field!r} is "
                            f"{type(text).__name__}, not a string")
        return text

    def index(self) -> tuple[np.ndarray, np.ndarray]:
        _nonempty_size(self.path, self.file)
        with open(self.file, "rb") as f:
            data = f.read()
        _text(data, self.path)
        starts, stops, pos = [], [], 0
        for lineno, line in enumerate(data.split(b"\n"), 1):
            end = pos + len(line)
            if line.strip():
                try:
                    obj = json.loads(line)
                except ValueError as e:
                    raise DataError(f"{self.path!r} line {lineno}: invalid JSON ({e})") from None
                self._text(obj, f"line {lineno}")
                starts.append(pos)
                stops.append(end)
            pos = end + 1
        if not starts:
            raise DataError(f"data file {self.path!r} has no JSON lines")
        return np.asarray(starts, np.int64), np.asarray(stops, np.int64)

    def read(self, a: int, b: int) -> str:
        with open(self.file, "rb") as f:
            f.seek(a)
            return self._text(json.loads(f.read(b - a)), f"byte offset {a}")


class ParquetReader:
    """A .parquet file: one document per row of the string column `text_field` (null = "")."""

    kind = "parquet"
    cuttable = False

    def __init__(self, path: str, text_field: str):
        self.path, self.text_field = path, text_field
        self._column = None

    def index(self) -> tuple[np.ndarray, np.ndarray]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        _nonempty_size(self.path)
        try:
            meta = pq.ParquetFile(self.path)
        except (pa.ArrowException, OSError) as e:
            raise DataError(f"cannot read parquet file {self.path!r}: {e}") from None
        schema = meta.schema_arrow
        if self.text_field not in schema.names:
            raise DataError(f"{self.path!r}: no text column {self.text_field!r} "
                            f"(columns: {schema.names}); set data.text_field")
        typ = schema.field(self.text_field).type
        if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
            raise DataError(f"{self.path!r}: column {self.text_field!r} has type {typ}, not string")
        n = meta.metadata.num_rows
        if n == 0:
            raise DataError(f"data file {self.path!r} has no rows")
        rows = np.arange(n, dtype=np.int64)
        return rows, rows + 1

    def __getstate__(self):
        return {**self.__dict__, "_column": None}

    def read(self, a: int, b: int) -> str:
        del b
        if self._column is None:
            import pyarrow.parquet as pq

            table = pq.read_table(self.path, columns=[self.text_field])
            self._column = table.column(self.text_field).combine_chunks()
        return self._column[a].as_py() or ""


class ArrayRecordReader:
    """An ArrayRecord file: each record is UTF-8 text, or a JSON object holding `text_field`."""

    kind = "arrayrecord"
    cuttable = False

    def __init__(self, path: str, text_field: str):
        self.path, self.text_field = path, text_field
        self._reader = None

    def _open(self):
        from array_record.python.array_record_module import ArrayRecordReader as _Reader

        try:
            return _Reader(self.path, "readahead_buffer_size:0,max_parallelism:0")
        except Exception as e:  # the C++ binding raises RuntimeError/ValueError
            raise DataError(f"cannot read ArrayRecord file {self.path!r}: {e}") from None

    def index(self) -> tuple[np.ndarray, np.ndarray]:
        _nonempty_size(self.path)
        reader = self._open()
        n = reader.num_records()
        reader.close()
        if n == 0:
            raise DataError(f"ArrayRecord file {self.path!r} has no records")
        rows = np.arange(n, dtype=np.int64)
        return rows, rows + 1

    def __getstate__(self):
        return {**self.__dict__, "_reader": None}

    def read(self, a: int, b: int) -> str:
        del b
        if self._reader is None:
            self._reader = self._open()
        text = _decode(self._reader.read([int(a)])[0], self.path, f" record {a}")
        if text.lstrip().startswith("{"):
            try:
                obj = json.loads(text)
            except ValueError:
                return text  # plain text that happens to start with "{"
            if isinstance(obj, dict):
                if self.text_field not in obj or not isinstance(obj[self.text_field], str):
                    raise DataError(f"{self.path!r} record {a}: JSON record without string "
                                    f"field {self.text_field!r}; set data.text_field")
                return obj[self.text_field]
        return text


def make_reader(path: str, text_field: str, fmt: str = "auto"):
    """The reader for `path`: format by `fmt` or the name, gzip / zstd decompressed (formats.py).

    Raises:
      DataError: an unknown format or refused extension, or a file that cannot be decompressed.
    """
    kind = file_format(path, fmt)
    file = plain_path(path)
    if kind == "text":
        return TextReader(path, file=file)
    if kind == "jsonl":
        return JsonlReader(path, text_field, file)
    if file != path:
        raise DataError(f"{path!r}: a compressed {kind} file; decompress it (parquet compresses "
                        "internally)")
    return ParquetReader(path, text_field) if kind == "parquet" else ArrayRecordReader(
        path, text_field)
