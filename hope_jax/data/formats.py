"""Which format a data file is in, and transparent gzip / zstd decompression.

Format: `data.format` when it is not "auto"; else by the file name with any `.gz` / `.zst` /
`.zstd` suffix removed: `.jsonl` / `.ndjson` -> jsonl, `.parquet` -> parquet, `.arrayrecord` /
`.array_record` -> arrayrecord, a few extensions of other formats (`.json`, `.csv`, `.zip`, ...)
are refused with a hint, and every other name (`.txt`, `.raw`, `.md`, none) is plain text, which
must be UTF-8 (checked when the file is indexed).

Compression is recognised by its magic bytes (gzip 1f 8b, zstd 28 b5 2f fd; neither can start a
UTF-8 file), whatever the name. A compressed file is decompressed once, streaming, into
`$HOPE_JAX_CACHE/decompressed/` (default `~/.cache/hope_jax`), keyed by the file's absolute path,
size and mtime, and read from there by byte offset like any other file.
"""

from __future__ import annotations

import hashlib
import os
import shutil

from hope_jax.data.errors import DataError

__all__ = ["FORMATS", "compression", "file_format", "plain_path"]

FORMATS = ("auto", "text", "jsonl", "parquet", "arrayrecord")

_BY_EXTENSION = {".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
                 ".arrayrecord": "arrayrecord", ".array_record": "arrayrecord"}
# Extensions that name a format we do not read: refused rather than guessed to be text.
REFUSED = frozenset({".json", ".csv", ".tsv", ".arrow", ".feather", ".tfrecord", ".zip", ".tar",
                     ".npy", ".npz", ".pkl", ".pickle", ".bz2", ".xz", ".lz4", ".7z"})
_SUFFIXES = {".gz": "gzip", ".zst": "zstd", ".zstd": "zstd"}
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"\x28\xb5\x2f\xfd", "zstd"))


def _stem_ext(path: str) -> str:
    stem, ext = os.path.splitext(os.path.basename(path))
    if ext.lower() in _SUFFIXES:
        ext = os.path.splitext(stem)[1]
    return ext.lower()


def file_format(path: str, fmt: str = "auto") -> str:
    """'text' | 'jsonl' | 'parquet' | 'arrayrecord' for `path` (see the module docstring)."""
    if fmt not in FORMATS:
        raise DataError(f"unknown data.format {fmt!r}; choose from {FORMATS}")
    if fmt != "auto":
        return fmt
    ext = _stem_ext(path)
    if ext in REFUSED:
        raise DataError(
            f"data file {path!r} has unsupported extension {ext!r}: supported are jsonl, parquet, "
            "arrayrecord and UTF-8 text (any other name, optionally .gz/.zst); set "
            "data.format='text' to read it as plain text")
    return _BY_EXTENSION.get(ext, "text")


def compression(path: str) -> str | None:
    """'gzip' | 'zstd' by the file's magic bytes, else None."""
    with open(path, "rb") as f:
        head = f.read(4)
    return next((kind for magic, kind in _MAGIC if head.startswith(magic)), None)


def _cache_dir() -> str:
    root = os.environ.get("HOPE_JAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                            "hope_jax")
    return os.path.join(root, "decompressed")


def _open_decompressed(path: str, kind: str):
    if kind == "gzip":
        import gzip

        return gzip.open(path, "rb")
    try:
        import zstandard
    except ImportError:
        raise DataError(f"{path!r} is zstd-compressed: pip install zstandard") from None
    return zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True)


def plain_path(path: str) -> str:
    """`path` itself, or for a gzip / zstd file the path of its decompressed copy (cached)."""
    kind = compression(path)
    if kind is None:
        return path
    st = os.stat(path)
    key = hashlib.blake2b(f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}".encode(),
                          digest_size=12).hexdigest()
    out = os.path.join(_cache_dir(), f"{key}-{os.path.basename(path)}")
    if os.path.exists(out):
        return out
    tmp = f"{out}.{os.getpid()}.tmp"
    try:
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with _open_decompressed(path, kind) as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)
        os.replace(tmp, out)  # atomic: a reader never sees a partial copy
    except DataError:
        raise
    except Exception as e:  # gzip: OSError/EOFError; zstandard: ZstdError
        if os.path.exists(tmp):
            os.remove(tmp)
        if isinstance(e, OSError) and e.filename in (tmp, os.path.dirname(out)):
            raise DataError(f"cannot decompress {path!r} into {os.path.dirname(out)!r}: {e}; "
                            "set HOPE_JAX_CACHE to a writable directory") from None
        raise DataError(f"cannot decompress {kind} file {path!r}: {e}") from None
    return out
