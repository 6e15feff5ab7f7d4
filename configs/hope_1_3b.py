"""HOPE at the paper's 1.3b scale (SPEC §4.5, §5, A13): self-modifying Titans -> 3-level CMS.

Recipe: `hope_jax.recipes.paper_recipe` (vocab 32K, 4K context, 0.5M-token batches, AdamW 4e-4
cosine, wd 0.1, bf16). CMS levels of SwiGLU width 1024 with periods 512 / 2048 / static tokens
(the lowest frequencies of the paper's Fig. 7; SPEC A2 leaves them to us), updated by the
next-token loss (`ntp`, SPEC §7.0); self-modifying memories with chunk 16 (it must divide the
fastest CMS period). The CMS width is chosen so the total lands on the nominal size
(`python -m hope_jax.param_count configs/hope_1_3b.py`).

What fits (docs/PAPER.md "What fits", docs/RESULTS.md): on 8 devices, fsdp 4 x tensor 2 (the
per-sequence CMS fast parts split over tensor), segment groups of 2 rematerialised, one sequence
per device per micro-batch (grad_accum 32): the AOT plan is 54.4 GiB per device
(`python benchmarks/memory_plan.py --config=configs/hope_1_3b.py --devices=8`); fsdp 8 with
grad_accum 16 plans 96.0 GiB.
"""

from hope_jax.config import default_config_dict
from hope_jax.recipes import paper_recipe


def get_config():
    c = paper_recipe(default_config_dict(), "1_3b", name="hope", mlp_hidden=1024)
    c.model.inner.update(chunk_size=16)
    c.model.hope.update(cms_periods=(512, 2048, 0), cms_signal="ntp", cms_lr=1e-2,
                        ntp_remat_group=2)
    c.mesh.update(tensor=2)  # fsdp fills the rest: 4 on 8 devices
    c.optim.update(grad_accum=32)  # one sequence per device per micro-batch (batch over fsdp 4)
    c.train.update(memory_budget_gib=70.0)  # fail before compiling when the ntp bound is over
    return c
