"""Tiny Transformer++ on the embedded Python-stdlib corpus (byte-level): trains in minutes on CPU."""

from ml_collections import ConfigDict


def get_config() -> ConfigDict:
    c = ConfigDict()
    c.model = ConfigDict(dict(name="transformer", vocab_size=257, d_model=128, num_layers=4,
                              num_heads=4, dtype="float32"))
    c.data = ConfigDict(dict(source="stdlib", seq_len=128, batch_size=16, seed=0))
    c.optim = ConfigDict(dict(name="adamw", lr=3e-3, warmup_steps=30, weight_decay=0.1,
                              clip_norm=1.0))
    c.train = ConfigDict(dict(steps=300, log_every=10, eval_every=100, eval_batches=8,
                              ckpt_every=100))
    return c
