"""Data pipeline: document sources, tokenizers and packed LM batches (grain).

    ds = make_dataset(cfg.data, "train", process_index=jax.process_index(),
                      process_count=jax.process_count())
    it = iter(ds)               # it.get_state() / it.set_state(state) for exact resume
    batch = next(it)            # inputs, targets, positions, segment_ids: int32 [B, T]; mask f32
"""

from hope_jax.data.errors import DataError
from hope_jax.data.pipeline import make_dataset
from hope_jax.data.sources import DocumentSource, file_documents, load_documents, stdlib_documents
from hope_jax.data.tokenizers import (
    ByteTokenizer,
    HFTokenizer,
    SentencePieceTokenizer,
    Tokenizer,
    build_tokenizer,
)

__all__ = ["ByteTokenizer", "DataError", "DocumentSource", "HFTokenizer", "SentencePieceTokenizer",
           "Tokenizer", "build_tokenizer", "file_documents", "load_documents", "make_dataset",
           "stdlib_documents"]
