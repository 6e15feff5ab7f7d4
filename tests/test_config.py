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
])
def test_bad_values(kw, pattern):
    import re

    assert re.search(pattern, _bad(**kw))


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
