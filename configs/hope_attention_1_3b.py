"""Hope-Attention at the paper's 1.3b scale (SPEC §4.5): global softmax attention -> 3-level CMS.

Same recipe and CMS as `configs/hope_1_3b.py`; CMS width 1856 lands on the nominal size.
"""

from hope_jax.config import default_config_dict
from hope_jax.recipes import paper_recipe


def get_config():
    c = paper_recipe(default_config_dict(), "1_3b", name="hope_attention", mlp_hidden=1856)
    c.model.inner.update(chunk_size=16)
    c.model.hope.update(cms_periods=(16, 256, 0), cms_signal="ntp", cms_lr=1e-2)
    return c
