"""The one exception type of the data pipeline."""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Bad data or tokenizer input. The message names the problem and the file involved.

    Raised for: a missing file or directory, an empty file or corpus, a file that is not UTF-8
    (with the byte offset), an unsupported extension, a record without the configured text field,
    and an unreadable tokenizer file.
    """
