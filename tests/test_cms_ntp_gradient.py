"""The `ntp` CMS updates (SPEC Eq. 71, §7.0) of a 2-layer HOPE (self-modifying mixer) whose slow
level's window spans two segments, against the independent window-by-window reference
(`tests/cms_ntp_reference.py`, plain jax.grad through the whole sequence, float64).

The driver (`models/ntp.py`) holds the carried mixer state constant in each segment's loss, so it
equals the reference with that truncation; the exact Eq. 71 gradient differs by the paths through
the carried state (docs/PAPER.md, deviations), which vanish with one layer."""

import flax.linen as nn
import jax
import numpy as np
import pytest

from hope_jax.models.lm import LM
from tests.cms_ntp_reference import reference_updates
from tests.helpers import tiny_config

pytestmark = pytest.mark.usefixtures("float64")

S, T = 2, 8  # segment (fastest period) and sequence: 4 segments, slow windows of 2 segments


def _cfg(layers=2, **kw):
    base = {"model.name": "hope", "model.d_model": 16, "model.num_heads": 2,
            "model.num_layers": layers, "model.mlp_hidden": 16, "model.param_dtype": "float64",
            "model.dtype": "float64", "model.hope.cms_periods": (S, 2 * S),
            "model.inner.chunk_size": S, "model.hope.cms_lr": 0.5, "model.init_std": 0.3,
            "data.seq_len": T}
    base.update(kw)
    return tiny_config(**base).model


def _setup(layers=2, **kw):
    mcfg = _cfg(layers, **kw)
    x = jax.random.randint(jax.random.key(0), (2, T), 0, 257)
    p = nn.unbox(jax.jit(LM(mcfg).init)(jax.random.key(1), x))["params"]
    return mcfg, x, p


def test_driver_equals_truncated_reference_and_not_the_exact_gradient():
    mcfg, x, p = _setup()
    driver = np.asarray(jax.jit(LM(mcfg).apply)({"params": p}, x))
    d_tr, ref_tr = reference_updates(p["ntp"], mcfg, x, truncate=True)
    d_ex, ref_ex = reference_updates(p["ntp"], mcfg, x, truncate=False)
    np.testing.assert_allclose(driver, ref_tr, atol=1e-10, rtol=1e-10)
    # the updates are live (logits of the last segments move) and the exact gradient differs
    assert np.abs(d_tr[1]["up"][1]).max() > 1e-3
    slow = np.abs(np.asarray(d_ex[1]["up"][1] - d_tr[1]["up"][1])).max()
    assert slow > 1e-6 * np.abs(np.asarray(d_tr[1]["up"][1])).max()
    assert np.abs(driver[:, 2 * S:] - np.asarray(ref_ex[:, 2 * S:])).max() > 1e-8
    # the fastest level's window is one segment: no carried path inside it, exact == truncated
    for k in ("gate", "up", "down"):
        np.testing.assert_allclose(d_ex[0][k][:2], d_tr[0][k][:2], atol=1e-12)


RESIDUAL = {"model.hope.cms_grad": "residual", "model.hope.cms_first_order": True}


def test_residual_teach_signal_equals_its_definition():
    """`cms_grad="residual"` (the mixers above a level are skipped by its inner gradient) ==
    the reference's `residual_grad` (the final residual's gradient pulled back through each
    level's MLP alone), window by window, 2 layers; it differs from the exact form."""
    mcfg, x, p = _setup(**RESIDUAL)
    driver = np.asarray(jax.jit(LM(mcfg).apply)({"params": p}, x))
    d_res, ref = reference_updates(p["ntp"], mcfg, x, truncate=True, residual=True)
    np.testing.assert_allclose(driver, ref, atol=1e-10, rtol=1e-10)
    assert np.abs(d_res[1]["up"][1]).max() > 1e-3 and np.abs(d_res[0]["up"][1]).max() > 1e-3
    exact = jax.jit(LM(_cfg(**{"model.hope.cms_first_order": True})).apply)({"params": p}, x)
    assert np.abs(driver[:, 2 * S:] - np.asarray(exact[:, 2 * S:])).max() > 1e-8


def test_residual_teach_signal_is_exact_for_the_last_sublayer():
    """One layer whose only in-context level is its last sublayer: nothing lies between the level
    and the final residual, so the residual and exact inner gradients are the same."""
    one = {"model.hope.cms_periods": (S,), "model.hope.cms_first_order": True}
    mcfg, x, p = _setup(1, **one)
    out = {g: np.asarray(jax.jit(LM(_cfg(1, **one, **{"model.hope.cms_grad": g})).apply)(
        {"params": p}, x)) for g in ("exact", "residual")}
    np.testing.assert_allclose(out["residual"], out["exact"], atol=1e-12, rtol=1e-10)
