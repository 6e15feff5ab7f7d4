"""Gated DeltaNet (Yang et al. 2025), 1.3B scale.

L2 objective, GD, data-dependent decay.

Shared paper recipe and fitted FFN width: see `hope_jax/baseline_recipes.py`.
"""

from hope_jax.baseline_recipes import baseline_config


def get_config():
    return baseline_config("gated_deltanet", "1_3b")
