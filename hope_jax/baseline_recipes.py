"""Paper-scale and tiny configs of the baselines (`configs/<name>_{tiny,340m,760m,1_3b}.py`).

Every baseline uses the shared pre-training recipe (`hope_jax.recipes.paper_recipe`, SPEC §5, A13:
d = 1024 / 1536 / 2048, 24 layers, vocab 32K, 4K context, AdamW 4e-4 cosine, 0.5M-token batches)
and changes only what its paper fixes: Mamba2 and Samba use head dim 64 (heads = 2d/64 over the
2x-expanded inner width) and a 128-wide state; TTT uses head dim 64 and mini-batch 16 (TTT paper);
Samba stacks 12 (Mamba2 + MLP, SWA + MLP) units = 24 mixer layers with a 2048-token window.
The SwiGLU width `mlp_hidden` is then chosen per model and size so that the total parameter count
lands within 1% of nominal (`python -m hope_jax.param_count configs/<name>_*.py`; tested within
5% in tests/test_baselines.py).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from hope_jax.config import default_config_dict
from hope_jax.models.config import registered_models
from hope_jax.recipes import SIZES, paper_recipe

# SwiGLU hidden width per (model, size), fitted with jax.eval_shape (see module docstring)
MLP_HIDDEN = {
    "linear_attention": {"340m": 2816, "760m": 4352, "1_3b": 5632},
    "retnet": {"340m": 1408, "760m": 2304, "1_3b": 2880},
    "mamba2": {"340m": 2048, "760m": 3264, "1_3b": 4160},
    "deltanet": {"340m": 2816, "760m": 4352, "1_3b": 5632},
    "gated_deltanet": {"340m": 2432, "760m": 3840, "1_3b": 4928},
    "ttt_linear": {"340m": 2432, "760m": 3840, "1_3b": 4928},
    "ttt_mlp": {"340m": 2304, "760m": 3712, "1_3b": 4800},
    "samba": {"340m": 2432, "760m": 3840, "1_3b": 4928},
}


# What each baseline's paper fixes beyond the shared recipe (a table, read by key)
HEADS_PER_64 = {"mamba2": 2, "samba": 2, "ttt_linear": 1, "ttt_mlp": 1}  # heads = k * d / 64
MODEL_KEYS = {"samba": {"num_layers": 12}}  # 12 (Mamba2 + MLP, SWA + MLP) units
INNER_KEYS = {"ttt_linear": {"chunk_size": 16, "remat_every": 4},  # TTT mini-batch 16
              "ttt_mlp": {"chunk_size": 16, "remat_every": 4}}
MEMORY_KEYS = {"samba": {"window": 2048}}


def _model_overrides(name: str, d: int) -> dict:
    heads = {"num_heads": HEADS_PER_64[name] * d // 64} if name in HEADS_PER_64 else {}
    return heads | MODEL_KEYS.get(name, {})


def baseline_config(name: str, size: str):
    """The config of baseline `name` at `size` ("340m", "760m", "1_3b")."""
    d = SIZES[size][0]
    c = paper_recipe(default_config_dict(), size, name=name, mlp_hidden=MLP_HIDDEN[name][size],
                     **_model_overrides(name, d))
    c.model.inner.update(**INNER_KEYS.get(name, {"chunk_size": 64}))
    c.model.memory.update(**MEMORY_KEYS.get(name, {}))
    c.model.baseline.update(ssm_state=128, ssm_expand=2.0)
    return c


def tiny_config(name: str):
    """`configs/transformer_tiny.py` (read from that file, so width, depth, data, steps and
    optimizer always match it) with the model swapped for baseline `name`."""
    path = Path(__file__).resolve().parents[1] / "configs" / "transformer_tiny.py"
    spec = importlib.util.spec_from_file_location("transformer_tiny", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    c = mod.get_config()
    c.model.name = name
    per_block = registered_models()[name].layers_per_block  # Samba: a unit holds 2 mixer layers
    c.model.num_layers = max(1, c.model.num_layers // per_block)
    c.model.inner.update(chunk_size=16)
    c.model.memory.update(window=64)
    c.model.baseline.update(ssm_state=32)
    return c
