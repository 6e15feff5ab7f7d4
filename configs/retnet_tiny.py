"""RetNet (Sun et al. 2023), tiny (byte-level, stdlib corpus).

Dot-product objective, fixed per-head decay.

Same width, depth, data, steps and optimizer as `configs/transformer_tiny.py` (see
`hope_jax/baseline_recipes.py`).
"""

from hope_jax.baseline_recipes import tiny_config


def get_config():
    return tiny_config("retnet")
