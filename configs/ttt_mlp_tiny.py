"""TTT-MLP (Sun et al. 2024), tiny (byte-level, stdlib corpus).

L2 reconstruction, mini-batch GD on a 2-layer MLP fast model.

Same width, depth, data, steps and optimizer as `configs/transformer_tiny.py` (see
`hope_jax/baseline_recipes.py`).
"""

from hope_jax.baseline_recipes import tiny_config


def get_config():
    return tiny_config("ttt_mlp")
