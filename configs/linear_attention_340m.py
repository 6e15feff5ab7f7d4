"""Linear attention (Katharopoulos et al. 2020), 340M scale.

Dot-product objective, no retention.

Shared paper recipe and fitted FFN width: see `hope_jax/baseline_recipes.py`.
"""

from hope_jax.baseline_recipes import baseline_config


def get_config():
    return baseline_config("linear_attention", "340m")
