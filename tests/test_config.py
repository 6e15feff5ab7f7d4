"""Config schema: every bad value fails with one line naming the key."""

import importlib.util
import os

import pytest

from hope_jax.config import ConfigError, default_config_dict, validate
from tests.helpers import ROOT


def _bad(**kw):
    d = default_config_dict().to_dict()
    for key, value in kw.items():
        node = d
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    with pytest.raises(ConfigError) as e:
        validate(d)
    msg = str(e.value)
    assert "\n" not in msg
    return msg


def test_defaults_validate():
    cfg = validate(default_config_dict())
    assert cfg.model.name == "transformer"


def test_unknown_key():
    d = default_config_dict().to_dict()
    d["model"]["widht"] = 3
    with pytest.raises(ConfigError, match=r"unknown config key config\.model\.widht"):
        validate(d)


@pytest.mark.parametrize("kw,pattern", [
    ({"model.d_model": "wide"}, r"config\.model\.d_model must be an int"),
    ({"model.num_heads": 3}, r"num_heads=3 must divide config\.model\.d_model"),
    ({"model.num_layers": 0}, r"config\.model\.num_layers=0 must be > 0"),
    ({"model.dtype": "fp8"}, r"config\.model\.dtype='fp8' is not one of"),
    ({"model.name": "nope"}, r"config\.model\.name='nope' is not a model"),
    ({"model.tie_embeddings": 1}, r"tie_embeddings must be a bool"),
    ({"optim.name": "adamz"}, r"config\.optim\.name='adamz' is not an optimizer"),
    ({"optim.b2": 1.5}, r"config\.optim\.b2=1\.5 must be in \[0, 1\]"),
    ({"optim.grad_accum": 3}, r"grad_accum=3 must divide config\.data\.batch_size"),
    ({"data.tokenizer": "hf"}, r"tokenizer='hf' needs config\.data\.tokenizer_path"),
    ({"data.source": "files"}, r"source='files' needs config\.data\.train_paths"),
    ({"data.val_fraction": 1.0}, r"val_fraction=1\.0 must be in \[0, 1\)"),
    ({"model.inner.out_norm": False, "model.inner.out_gain": True},
     r"out_gain=True scales the normalised branch: it needs config\.model\.inner\.out_norm"),
    ({"model.inner.grad_clip": -1.0}, r"grad_clip=-1\.0 must be >= 0"),
    ({"model.hope.cms_grad": "residual", "model.hope.cms_first_order": False},
     r"cms_grad='residual' .* set config\.model\.hope\.cms_first_order=True"),
    # PAPER.md D3: in ntp mode the model runs in segments of the fastest CMS period
    ({"model.name": "hope", "model.inner.chunk_size": 64},
     r"inner\.chunk_size=64 / hope\.other_chunk_size=64 must divide the fastest CMS period 16"),
    ({"model.name": "hope", "model.hope.other_chunk_size": 32},
     r"inner\.chunk_size=16 / hope\.other_chunk_size=32 must divide the fastest CMS period 16"),
])
def test_bad_values(kw, pattern):
    import re

    assert re.search(pattern, _bad(**kw))


def test_ntp_chunks_that_divide_the_fastest_period_validate():
    """PAPER.md D3: chunk 64 (SPEC A2's main-memory chunk) is reachable with periods 64 / 512;
    outside ntp mode the chunk need not divide the period."""
    d = default_config_dict().to_dict()
    d["model"].update(name="hope")
    d["model"]["inner"]["chunk_size"] = 64
    d["model"]["hope"]["cms_periods"] = (64, 512, 0)
    assert validate(d).model.inner.chunk_size == 64
    d["model"]["hope"].update(cms_periods=(16, 256, 0), cms_signal="local")
    assert validate(d).model.hope.cms_periods == (16, 256, 0)


def test_int_promotes_to_float_and_list_to_tuple():
    d = default_config_dict().to_dict()
    d["optim"]["lr"] = 1
    d["data"]["train_paths"] = ["a.txt"]
    d["data"]["source"] = "files"
    cfg = validate(d)
    assert cfg.optim.lr == 1.0 and cfg.data.train_paths == ("a.txt",)


@pytest.mark.parametrize("path", sorted(
    f for f in os.listdir(os.path.join(ROOT, "configs")) if f.endswith(".py")))
def test_every_config_file_validates(path):
    spec = importlib.util.spec_from_file_location("cfg", os.path.join(ROOT, "configs", path))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    cfg = mod.get_config()
    validate(cfg.get("base", cfg))  # mqar_*: {"base": config, "task": ...}


def _model(**model):
    d = default_config_dict().to_dict()
    for sec, value in model.items():
        if isinstance(value, dict):
            d["model"][sec].update(value)
        else:
            d["model"][sec] = value
    return validate(d).model


def test_inner_keys_left_at_sentinel_take_the_models_defaults():
    """One `model.inner` section: 0 / "" mean the model's own value (HOPE: chunk 16, DGD, eta <=
    1, SPEC §7; Titans and the baselines: 64, titans, 0.1); a value set is kept for any model."""
    hope, titans = _model(name="hope").inner, _model(name="titans_lmm").inner
    assert (hope.chunk_size, hope.optimizer, hope.lr_max) == (16, "dgd", 1.0)
    assert (titans.chunk_size, titans.optimizer, titans.lr_max) == (64, "titans", 0.1)
    assert _model(name="gated_deltanet").inner.chunk_size == 64
    set_ = _model(name="hope", inner={"chunk_size": 8, "optimizer": "gd", "lr_max": 0.5}).inner
    assert (set_.chunk_size, set_.optimizer, set_.lr_max) == (8, "gd", 0.5)
    raw = default_config_dict().to_dict()["model"]["inner"]  # config files start from sentinels
    assert (raw["chunk_size"], raw["optimizer"], raw["lr_max"]) == (0, "", 0.0)


def test_inner_config_checks_name_the_key():
    with pytest.raises(ConfigError, match=r"model\.inner\.optimizer='nope'"):
        _model(name="hope", inner={"optimizer": "nope"})
    with pytest.raises(ConfigError, match=r"model\.inner\.lr_init"):
        _model(name="titans_lmm", inner={"lr_init": 0.5})  # >= Titans' lr_max 0.1
    with pytest.raises(ConfigError, match=r"inner\.chunk_size=12 .* fastest CMS period 16"):
        _model(name="hope", inner={"chunk_size": 12}, hope={"cms_periods": (16, 0)})
    _model(name="titans_lmm", inner={"chunk_size": 12})  # no segments outside HOPE's ntp CMS


def test_old_keys_migrate_with_a_warning():
    """Renamed keys keep working for one release: a FutureWarning names each; HOPE models read
    theirs from `model.hope` (and out_norm / remat / closed form from `model.memory`), the others
    from `model.memory`; `persist_state` becomes `doc_reset` negated."""
    d = default_config_dict()
    d.model.name = "hope"
    d.model.hope.update(chunk_size=8, inner_optimizer="gd", weight_decay=False,
                        persist_state=True)
    d.model.memory.update(out_norm=False, chunk_size=32)
    with pytest.warns(FutureWarning, match=r"model\.hope\.inner_optimizer -> model\.inner"):
        m = validate(d).model
    assert (m.inner.chunk_size, m.inner.optimizer, m.inner.retention, m.inner.doc_reset,
            m.inner.out_norm) == (8, "gd", False, False, False)
    d = default_config_dict()
    d.model.name = "titans_lmm"
    d.model.memory.update(inner_opt="dgd", decay=False, chunk_size=16)
    d.model.hope.update(chunk_size=4)  # a section Titans never read: dropped
    with pytest.warns(FutureWarning, match=r"model\.memory\.decay -> model\.inner\.retention"):
        m = validate(d).model
    assert (m.inner.chunk_size, m.inner.optimizer, m.inner.retention) == (16, "dgd", False)


def test_checkpoint_written_with_old_keys_still_matches():
    """A run's saved model section in the old layout is read in today's names on resume."""
    import dataclasses

    from hope_jax.config_legacy import RENAMED
    from hope_jax.train.checkpoint import model_diff

    m = _model(name="hope", inner={"chunk_size": 8, "out_norm": True, "grad_clip": 0.0})
    current = dataclasses.asdict(m)
    old = {k: v for k, v in current.items() if k != "inner"}
    old["memory"] = dict(current["memory"], out_norm=True, remat_every=4, closed_form=True,
                         chunk_size=64, inner_opt="titans", lr_max=0.1)
    old["hope"] = dict(current["hope"], persist_state=False,
                       **{o: current["inner"][n] for o, n in RENAMED["hope"].items()
                          if not n.startswith("!")})
    assert model_diff(old, current) == []
    old["hope"]["chunk_size"] = 16
    assert model_diff(old, current) == [
        "config.model.inner.chunk_size: checkpoint 16 vs config 8"]
    # a run written before inner.grad_clip existed trained without clipping: resuming it under
    # today's default (clip 1) is refused, naming the key, not silently changed
    old["hope"]["chunk_size"] = 8
    new_default = dataclasses.asdict(_model(name="hope", inner={"chunk_size": 8,
                                                                "out_norm": True}))
    assert model_diff(old, new_default) == [
        "config.model.inner.grad_clip: checkpoint 0.0 vs config 1.0"]


def test_config_sections_do_not_import_the_assembled_config():
    """Each section lives beside what it configures; nothing under memory/, models/, optim/, nn/
    imports `hope_jax.config` (the old 13-file import circle ran through it)."""
    import pathlib
    import re
    import subprocess
    import sys

    pat = re.compile(r"^\s*(from hope_jax\.config import|import hope_jax\.config\b|"
                     r"from hope_jax import config\b)", re.M)
    for pkg in ("memory", "models", "optim", "nn"):
        for f in (pathlib.Path(ROOT) / "hope_jax" / pkg).glob("*.py"):
            assert not pat.search(f.read_text()), f
    for first in ("hope_jax.models.config", "hope_jax.memory.self_modifying", "hope_jax.optim"):
        code = f"import {first}; import hope_jax.config"
        subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def test_ntp_memory_bound_fails_early_with_its_numbers():
    """`train.memory_budget_gib`: the 1.3B plan with periods 16/256 (256 stored carries of
    3.4 GiB x 16 sequences per device) is refused before compiling, naming the numbers; periods
    512/2048 with one sequence per device per micro-batch pass a 70 GiB budget."""
    from hope_jax.config import replace
    from hope_jax.models import ntp_memory
    from hope_jax.param_count import load_config_file

    cfg = replace(load_config_file(os.path.join(ROOT, "configs", "hope_1_3b.py")),
                  **{"model.hope.cms_periods": (16, 256, 0), "optim.grad_accum": 1,
                     "model.hope.ntp_remat_group": 0, "train.memory_budget_gib": 70.0})
    mesh = {"data": 1, "fsdp": 8, "tensor": 1}
    with pytest.raises(ConfigError, match=r"13,824\.0 GiB .* 256 carries of 3\.38 GiB x 16"):
        ntp_memory.check_budget(cfg, mesh)
    ok = replace(cfg, **{"model.hope.cms_periods": (512, 2048, 0), "optim.grad_accum": 16})
    ntp_memory.check_budget(ok, mesh)
    assert ntp_memory.stored_carries(ok.model, 4096) == 8
    grouped = replace(ok, **{"model.hope.ntp_remat_group": 3})  # 7 after the first: 2 x 3 + 1
    assert ntp_memory.stored_carries(grouped.model, 4096) == 1 + 2 + 1 + 3
    assert ntp_memory.carry_bytes(ok.model, 4096, tensor=2) * 2 == ntp_memory.carry_bytes(
        ok.model, 4096)
