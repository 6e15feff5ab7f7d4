"""TTT-MLP (Sun et al. 2024), 340M scale.

L2 reconstruction, mini-batch GD on a 2-layer MLP fast model.

Shared paper recipe and fitted FFN width: see `hope_jax/baseline_recipes.py`.
"""

from hope_jax.baseline_recipes import baseline_config


def get_config():
    return baseline_config("ttt_mlp", "340m")
