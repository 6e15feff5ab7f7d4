"""Samba (Ren et al. 2024), tiny (byte-level, stdlib corpus).

Mamba2 + MLP + sliding-window attention + MLP, interleaved.

Same width, depth, data, steps and optimizer as `configs/transformer_tiny.py` (see
`hope_jax/baseline_recipes.py`).
"""

from hope_jax.baseline_recipes import tiny_config


def get_config():
    return tiny_config("samba")
