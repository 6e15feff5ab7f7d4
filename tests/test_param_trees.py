"""Checkpoint compatibility: every registered model's parameter tree (paths, shapes, dtypes) equals
the golden tree recorded before the LM bodies were merged into one (tests/data/lm_param_trees.json).

Regenerate (only for an intended, documented checkpoint break):
  python -m tests.test_param_trees tests/data/lm_param_trees.json
"""

from __future__ import annotations

import json
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import pytest

from hope_jax.models.lm import LM
from tests.helpers import tiny_config

GOLDEN = os.path.join(os.path.dirname(__file__), "data", "lm_param_trees.json")
BASE = {"model.d_model": 16, "model.num_layers": 2, "model.num_heads": 2}


def tree(over: dict) -> dict:
    cfg = tiny_config(**{k: tuple(x) if isinstance(x, list) else x for k, x in over.items()})
    model = LM(cfg.model)
    v = jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1, 16), jnp.int32)))
    leaves = jax.tree_util.tree_flatten_with_path(nn.unbox(v["params"]))[0]
    return {jax.tree_util.keystr(p): [list(a.shape), str(a.dtype)] for p, a in leaves}


with open(GOLDEN) as f:
    CASES = json.load(f)


@pytest.mark.parametrize("key", sorted(CASES))
def test_param_tree_unchanged(key):
    assert tree(CASES[key]["overrides"]) == CASES[key]["params"]


if __name__ == "__main__":
    out = {k: {"overrides": c["overrides"], "params": tree(c["overrides"])}
           for k, c in CASES.items()}
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, indent=0, sort_keys=True)
