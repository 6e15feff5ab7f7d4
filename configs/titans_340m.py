"""Titans (LMM) at the paper's 340M scale (SPEC A13): same memory and recipe as titans_760m."""

from hope_jax.config import default_config_dict
from hope_jax.recipes import paper_recipe


def get_config():
    c = paper_recipe(default_config_dict(), "340m", name="titans_lmm", mlp_hidden=2304)
    c.model.memory.update(arch="mlp", depth=2, hidden_mult=4.0)
    c.model.inner.update(chunk_size=64, remat_every=4)
    return c
