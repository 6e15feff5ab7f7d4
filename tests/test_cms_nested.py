"""Nested CMS (SPEC Eq. 72): the faster level restarts from its meta-learned initial state W0 (an
ordinary param, trained by the outer optimizer) exactly at the slower level's boundary; the driver
equals the window-by-window reference with that re-init, and the outer gradient reaches W0 through
the restarted window (finite differences, float64)."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from hope_jax.config_fields import ConfigError
from hope_jax.models.lm import LM
from hope_jax.models.ntp import nested_reinit
from tests.cms_ntp_reference import reference_updates
from tests.test_cms_ntp_gradient import S, _setup

pytestmark = pytest.mark.usefixtures("float64")


def test_reinit_exactly_at_the_slower_boundary():
    d = {"up": jnp.ones((2, 1, 3, 4))}
    deltas = (d, jax.tree_util.tree_map(lambda a: 2 * a, d), None)
    periods = (2, 4, 0)
    for seen in (2, 6):  # fast boundary only: nothing restarts
        out = nested_reinit(deltas, seen, periods)
        assert np.all(out[0]["up"] == 1) and np.all(out[1]["up"] == 2) and out[2] is None
    out = nested_reinit(deltas, 8, periods)  # slow boundary: the fast level is back at W0
    assert np.all(out[0]["up"] == 0) and np.all(out[1]["up"] == 2)
    # the slowest live level has no slower live level above it (static): it never restarts
    out = nested_reinit(deltas[:2] + (None,), 16, (2, 4, 16))
    assert np.all(out[1]["up"] == 2)


def test_periods_must_nest():
    with pytest.raises(ConfigError, match="divide the next"):
        _setup(**{"model.hope.cms_variant": "nested", "model.hope.cms_periods": (2, 4, 6),
                  "data.seq_len": 24})


def test_driver_equals_reference_and_outer_gradient_reaches_the_initial_state():
    # one layer: the re-init and the outer gradient need no carried path (the two-layer driver is
    # test_cms_ntp_gradient's), and it halves the compile
    mcfg, x, p = _setup(layers=1, **{"model.hope.cms_variant": "nested"})
    after = slice(2 * S, 3 * S)  # the segment right after the slow boundary (fast level = W0)

    def loss(p):
        logits = LM(mcfg).apply({"params": p}, x)
        nll = optax.softmax_cross_entropy_with_integer_labels(logits[:, after],
                                                              x[:, after.start + 1:after.stop + 1])
        return jnp.sum(nll), logits

    f = jax.jit(jax.value_and_grad(loss, has_aux=True))
    (_, logits), g = f(p)
    deltas, ref = reference_updates(p["ntp"], mcfg, x, truncate=True, nested=True)
    # the reference's fast part: updated at its own boundary, back to 0 at the slow one
    assert np.abs(deltas[0]["up"][1]).max() > 1e-3 and np.all(deltas[0]["up"][2] == 0)
    assert np.abs(deltas[0]["up"][3]).max() > 1e-3
    np.testing.assert_allclose(logits, ref, atol=1e-10, rtol=1e-10)
    g0 = g["ntp"]["blocks"]["block"]["cms_0"]
    assert all(np.abs(g0[k]).max() > 1e-6 for k in ("gate", "up", "down"))
    keys = jax.random.split(jax.random.key(2), 3)
    direction = {k: jax.random.normal(kk, g0[k].shape) for k, kk in zip(("gate", "up", "down"),
                                                                       keys)}

    def moved(eps):
        lv = p["ntp"]["blocks"]["block"]["cms_0"]
        lv = {**lv, **{k: lv[k] + eps * direction[k] for k in direction}}
        blocks = {**p["ntp"]["blocks"]["block"], "cms_0": lv}
        return {"ntp": {**p["ntp"], "blocks": {"block": blocks}}}

    eps = 1e-6  # 1e-5: 2e-6 relative truncation error at this init scale
    fd = (f(moved(eps))[0][0] - f(moved(-eps))[0][0]) / (2 * eps)
    an = sum(jnp.sum(g0[k] * direction[k]) for k in direction)
    np.testing.assert_allclose(an, fd, rtol=1e-6)
