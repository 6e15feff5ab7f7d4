"""DeltaNet (Schlag et al. 2021; Yang et al. 2024), tiny (byte-level, stdlib corpus).

L2 objective, GD (delta rule).

Same width, depth, data, steps and optimizer as `configs/transformer_tiny.py` (see
`hope_jax/baseline_recipes.py`).
"""

from hope_jax.baseline_recipes import tiny_config


def get_config():
    return tiny_config("deltanet")
