"""Mamba2-style gated linear attention (SSD), tiny (byte-level, stdlib corpus).

Dot-product objective, data-dependent scalar decay.

Same width, depth, data, steps and optimizer as `configs/transformer_tiny.py` (see
`hope_jax/baseline_recipes.py`).
"""

from hope_jax.baseline_recipes import tiny_config


def get_config():
    return tiny_config("mamba2")
