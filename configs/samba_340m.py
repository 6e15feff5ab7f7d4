"""Samba (Ren et al. 2024), 340M scale.

Mamba2 + MLP + sliding-window attention + MLP, interleaved.

Shared paper recipe and fitted FFN width: see `hope_jax/baseline_recipes.py`.
"""

from hope_jax.baseline_recipes import baseline_config


def get_config():
    return baseline_config("samba", "340m")
