"""HOPE at the paper's 340m scale (SPEC §4.5, §5, A13): self-modifying Titans -> 3-level CMS.

Recipe: `hope_jax.recipes.paper_recipe` (vocab 32K, 4K context, 0.5M-token batches, AdamW 4e-4
cosine, wd 0.1, bf16). CMS levels of SwiGLU width 512 with periods 16 / 256 / static tokens,
updated by the next-token loss (`ntp`, SPEC §7.0); self-modifying memories with chunk 16 (it must
divide the fastest CMS period). The CMS width is chosen so the total lands on the nominal size
(`python -m hope_jax.param_count configs/hope_340m.py`).
"""

from hope_jax.config import default_config_dict
from hope_jax.recipes import paper_recipe


def get_config():
    c = paper_recipe(default_config_dict(), "340m", name="hope", mlp_hidden=512)
    c.model.inner.update(chunk_size=16)
    c.model.hope.update(cms_periods=(16, 256, 0), cms_signal="ntp", cms_lr=1e-2)
    return c
