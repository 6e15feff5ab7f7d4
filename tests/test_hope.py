"""HOPE as a whole: configs and parameter counts, ablation switches, the `outer` CMS signal
through the real optimizer, and a short training run."""

import glob
import os

import jax
import numpy as np
import pytest

from hope_jax.models.lm import LM
from hope_jax.param_count import load_config_file, nominal
from hope_jax.train.state import param_count
from tests.helpers import ROOT, tiny_config, train_losses

BIG = sorted(glob.glob(os.path.join(ROOT, "configs", "hope*_*m.py"))
             + glob.glob(os.path.join(ROOT, "configs", "hope*_1_3b.py")))


@pytest.mark.parametrize("path", BIG, ids=os.path.basename)
def test_param_counts_within_5_percent_of_nominal(path):
    n = param_count(load_config_file(path))
    assert abs(n / nominal(path) - 1) <= 0.05, (path, n)


def _hope(**kw):
    """Tiny HOPE with a static CMS (stack mode: cheap to compile); CMS dynamics: test_cms.py."""
    base = {"model.name": "hope", "model.d_model": 16, "model.num_heads": 2, "model.num_layers": 1,
            "model.mlp_hidden": 16, "model.inner.chunk_size": 4, "model.hope.cms_periods": (0, 0),
            "data.seq_len": 16}
    base.update(kw)
    return tiny_config(**base)


ABLATIONS = {  # SPEC Table 6, each one config value
    "w/o DGD": {"model.inner.optimizer": "gd"},
    "w/o momentum": {"model.inner.momentum": False},
    "w/o weight decay": {"model.inner.retention": False},
    "w/o CMS": {"model.hope.cms_periods": (0,)},  # one static FFN instead of two levels
    "k at the slowest level": {"model.hope.static_proj": "k"},
    "v at the slowest level": {"model.hope.static_proj": "v"},
    "with adaptive q": {"model.hope.adaptive_q": True},
}


def test_defaults_match_spec():
    m = tiny_config(**{"model.name": "hope"}).model
    hc, ic = m.hope, m.inner
    assert (ic.optimizer, ic.momentum, ic.retention, hc.adaptive_q, hc.static_proj) == (
        "dgd", True, True, False, "")
    assert (ic.chunk_size, ic.lr_max, ic.lr_init) == (16, 1.0, 0.01)
    assert (hc.cms_signal, hc.cms_variant, hc.cms_periods) == ("ntp", "sequential", (16, 256, 0))


def _ablation_outputs(names):
    x = jax.random.randint(jax.random.key(0), (2, 16), 0, 257)
    out = {}
    for name in names:
        model = LM(_hope(**ABLATIONS.get(name, {})).model)
        out[name] = jax.jit(model.apply)(jax.jit(model.init)(jax.random.key(1), x), x)
    return out


def _assert_all_differ(out):
    base = out.pop("default")
    for name, y in out.items():
        assert y.shape == base.shape and np.isfinite(y).all()
        assert not np.allclose(y, base, atol=1e-5), name


def test_ablation_switches_change_the_output():
    """One switch per family (optimizer, CMS, projections) in the default suite."""
    _assert_all_differ(_ablation_outputs(["default", "w/o DGD", "w/o CMS",
                                          "k at the slowest level"]))


@pytest.mark.slow
def test_every_ablation_switch_changes_the_output():
    _assert_all_differ(_ablation_outputs(["default", *sorted(ABLATIONS)]))


def test_outer_signal_routes_cms_params_through_multisteps():
    from hope_jax.train.state import init_state, make_optimizer

    cfg = _hope(**{"model.hope.cms_signal": "outer", "model.hope.cms_periods": (2, 0),
                   "optim.warmup_steps": 0})
    model = LM(cfg.model)
    tx = make_optimizer(cfg, model)
    state = init_state(cfg, model, tx)
    grads = jax.tree.map(np.ones_like, state.params)
    params, opt = state.params, state.opt_state
    moved = []
    for _ in range(4):
        upd, opt = tx.update(grads, opt, params)
        lvl = jax.tree.leaves(upd["blocks"]["block"]["cms_0"])
        moved.append(any(float(np.abs(u).max()) > 0 for u in lvl))
    assert moved == [False, True, False, True]


@pytest.mark.parametrize("name", ["hope", "hope_attention"])
def test_tiny_hope_trains(tmp_path, name):
    from hope_jax.train.loop import train

    cfg = _hope(**{"model.name": name, "train.steps": 60, "optim.lr": 1e-2, "data.batch_size": 8,
                   "model.d_model": 32, "model.hope.cms_periods": (8, 0), "data.seq_len": 16,
                   "model.hope.cms_first_order": True})  # first order: half the compile
    out = train(cfg, str(tmp_path))
    losses = train_losses(tmp_path)
    assert np.isfinite(out["train_loss"]) and len(losses) == 60
    assert np.mean(losses[-10:]) < np.mean(losses[:5]) - 1.0, losses
