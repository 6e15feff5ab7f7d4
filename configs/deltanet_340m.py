"""DeltaNet (Schlag et al. 2021; Yang et al. 2024), 340M scale.

L2 objective, GD (delta rule).

Shared paper recipe and fitted FFN width: see `hope_jax/baseline_recipes.py`.
"""

from hope_jax.baseline_recipes import baseline_config


def get_config():
    return baseline_config("deltanet", "340m")
