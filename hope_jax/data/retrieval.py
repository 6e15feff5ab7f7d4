"""Synthetic retrieval documents: the S-NIAH samples (SPEC §6.3) and their mix into training.

`make_sample` builds one needle-in-a-haystack example (used by `hope_jax.eval.niah` to evaluate);
`RetrievalMix` spreads such examples, each followed by its answer, among a corpus's training
documents (`data.retrieval_mix`), as long-context training recipes do so that a model has seen the
task before it is scored on it at 1x, 2x and 4x its training context.
"""

from __future__ import annotations

import uuid

import numpy as np

from hope_jax.data.errors import DataError

KINDS = ("passkey", "number", "uuid")
NOISE = "The grass is green. The sky is blue. The sun is yellow. Here we go. There and back again. "
_KEYS = ("apple", "river", "silver", "falcon", "copper", "meadow", "harbor", "lantern", "orbit",
         "pepper", "violet", "canyon")


def _value(kind: str, rng: np.random.Generator) -> str:
    if kind == "uuid":
        return str(uuid.UUID(bytes=rng.bytes(16), version=4))
    return str(int(rng.integers(1_000_000, 10_000_000)))


def _needle_and_query(kind: str, key: str, value: str) -> tuple[str, str]:
    word = "pass key" if kind == "passkey" else ("number" if kind == "number" else "uuid")
    needle = f" One of the special magic {word}s for {key} is: {value}. "
    query = (f"\nWhat is the special magic {word} for {key} mentioned in the provided text? "
             f"The special magic {word} for {key} mentioned in the provided text is")
    return needle, query


def min_length(tokenizer) -> int:
    """Tokens the longest needle + question take (a sample needs more than this)."""
    key, value = max(_KEYS, key=len), "0" * 36  # the longest key; a UUID is the longest value
    return max(len(tokenizer.encode("".join(_needle_and_query(k, key, value)))) for k in KINDS)


def make_sample(kind: str, length: int, depth: float, seed: int, tokenizer,
                haystack: str | None = None, stream: int = 0) -> dict:
    """One NIAH example: {"prompt", "answer", "kind", "length", "depth"}.

    Args:
      kind: "passkey" | "number" | "uuid".
      length: target prompt length in tokens (the haystack is trimmed to fit).
      depth: relative needle position in [0, 1].
      seed: sample seed.
      tokenizer: has `encode`.
      haystack: real text for `number`/`uuid` (default: the noise sentences, as S-NIAH-1).
      stream: 0 = the evaluation samples; another value draws keys and values from a disjoint
        random stream (the training mix uses its own, so it never trains on an eval sample).
    """
    if kind not in KINDS:
        raise ValueError(f"unknown NIAH kind {kind!r}; choose from {KINDS}")
    rng = np.random.default_rng([seed, KINDS.index(kind), length, int(depth * 1000)]
                                + ([stream] if stream else []))
    key = _KEYS[int(rng.integers(len(_KEYS)))]
    value = _value(kind, rng)
    needle, query = _needle_and_query(kind, key, value)
    hay = NOISE if kind == "passkey" or not haystack else haystack
    budget = length - len(tokenizer.encode(needle + query))
    if budget <= 0:
        raise ValueError(f"length {length} is too short for the needle and the question")
    text = hay * (1 + budget // max(1, len(tokenizer.encode(hay))))
    ids = tokenizer.encode(text)[:budget]
    body = tokenizer.decode(ids)
    cut = int(round(depth * len(body)))
    dot = body.rfind(". ", 0, cut)  # insert at a sentence boundary at or before the depth
    cut = 0 if depth == 0 or dot < 0 else dot + 1
    return {"prompt": body[:cut] + needle + body[cut:] + query, "answer": value, "kind": kind,
            "length": length, "depth": depth}


class RetrievalMix:
    """A document sequence (random access, for grain) with synthetic S-NIAH documents added.

    Documents 0..n-1 are `docs`; documents n..n+m-1 (m = round(n * frac / (1 - frac)), at least 1,
    so they are a share `frac` of all documents) are S-NIAH examples, kinds in turn (pass key,
    number, UUID), each `prompt + " " + answer + "."` with a needle depth uniform in [0, 1] and a
    length uniform in [length // 2, length] tokens; `number` / `uuid` hide their needle in one of
    the corpus's own documents. Everything is a function of (seed, index): the shuffled pipeline
    stays deterministic and resumable.
    """

    def __init__(self, docs, tokenizer, frac: float, length: int, seed: int):
        if not 0.0 < frac < 1.0:
            raise DataError(f"data.retrieval_mix= {frac} must be in (0, 1)")
        need = min_length(tokenizer) + 16
        if length < need:
            raise DataError(f"data.retrieval_len={length} tokens is too short for an S-NIAH "
                             f"sample with this tokenizer (needle + question alone take "
                             f"{need - 16}); use at least {need} "
                             "(data.retrieval_len=0 means data.seq_len)")
        self.docs, self.tokenizer, self.length, self.seed = docs, tokenizer, length, seed
        self.lo = max(need, length // 2)
        self.n = len(docs)
        self.m = max(1, int(round(self.n * frac / (1.0 - frac))))

    def __len__(self) -> int:
        return self.n + self.m

    def __getitem__(self, i: int) -> str:
        i = int(i)
        if i < self.n:
            return self.docs[i]
        j = i - self.n
        kind = KINDS[j % len(KINDS)]
        rng = np.random.default_rng([self.seed, j, 0x5EED])
        depth = float(rng.uniform())
        length = int(rng.integers(self.lo, self.length + 1))
        hay = None if kind == "passkey" or not self.n else self.docs[int(rng.integers(self.n))]
        ex = make_sample(kind, length, depth, j, self.tokenizer, hay, stream=self.seed + 1)
        return f"{ex['prompt']} {ex['answer']}."

