"""Mamba2-style gated linear attention (SSD), 340M scale.

Dot-product objective, data-dependent scalar decay.

Shared paper recipe and fitted FFN width: see `hope_jax/baseline_recipes.py`.
"""

from hope_jax.baseline_recipes import baseline_config


def get_config():
    return baseline_config("mamba2", "340m")
