"""Gated DeltaNet (Yang et al. 2025), tiny (byte-level, stdlib corpus).

L2 objective, GD, data-dependent decay.

Same width, depth, data, steps and optimizer as `configs/transformer_tiny.py` (see
`hope_jax/baseline_recipes.py`).
"""

from hope_jax.baseline_recipes import tiny_config


def get_config():
    return tiny_config("gated_deltanet")
