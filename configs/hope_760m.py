"""HOPE at the paper's 760m scale (SPEC §4.5, §5, A13): self-modifying Titans -> 3-level CMS.

Recipe: `hope_jax.recipes.paper_recipe` (vocab 32K, 4K context, 0.5M-token batches, AdamW 4e-4
cosine, wd 0.1, bf16). CMS levels of SwiGLU width 832 with periods 512 / 2048 / static tokens
(the lowest frequencies of the paper's Fig. 7; SPEC A2 leaves them to us), updated by the
next-token loss (`ntp`, SPEC §7.0); self-modifying memories with chunk 16 (it must divide the
fastest CMS period). The CMS width is chosen so the total lands on the nominal size
(`python -m hope_jax.param_count configs/hope_760m.py`).

What fits (docs/PAPER.md "What fits", docs/RESULTS.md): periods 16 / 256 store a copy of every
sequence's CMS fast parts per 16-token segment in the backward pass (terabytes per device);
with 512 / 2048, segment groups of 2 rematerialised and one sequence per device per micro-batch
(grad_accum 16 on 8 devices) the AOT plan on 8 fake devices is 63.6 GiB per device
(`python benchmarks/memory_plan.py --config=configs/hope_760m.py --mesh=1,8,1 --devices=8`).
"""

from hope_jax.config import default_config_dict
from hope_jax.recipes import paper_recipe


def get_config():
    c = paper_recipe(default_config_dict(), "760m", name="hope", mlp_hidden=832)
    c.model.inner.update(chunk_size=16)
    c.model.hope.update(cms_periods=(512, 2048, 0), cms_signal="ntp", cms_lr=1e-2,
                        ntp_remat_group=2)
    c.optim.update(grad_accum=16)  # one sequence per device per micro-batch on 8 devices
    c.train.update(memory_budget_gib=70.0)  # fail before compiling when the ntp bound is over
    return c
