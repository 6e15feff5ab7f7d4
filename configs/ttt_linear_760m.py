"""TTT-Linear (Sun et al. 2024), 760M scale.

L2 reconstruction, mini-batch GD on a linear fast model.

Shared paper recipe and fitted FFN width: see `hope_jax/baseline_recipes.py`.
"""

from hope_jax.baseline_recipes import baseline_config


def get_config():
    return baseline_config("ttt_linear", "760m")
