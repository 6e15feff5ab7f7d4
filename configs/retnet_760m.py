"""RetNet (Sun et al. 2023), 760M scale.

Dot-product objective, fixed per-head decay.

Shared paper recipe and fitted FFN width: see `hope_jax/baseline_recipes.py`.
"""

from hope_jax.baseline_recipes import baseline_config


def get_config():
    return baseline_config("retnet", "760m")
