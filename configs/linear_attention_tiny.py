"""Linear attention (Katharopoulos et al. 2020), tiny (byte-level, stdlib corpus).

Dot-product objective, no retention.

Same width, depth, data, steps and optimizer as `configs/transformer_tiny.py` (see
`hope_jax/baseline_recipes.py`).
"""

from hope_jax.baseline_recipes import tiny_config


def get_config():
    return tiny_config("linear_attention")
