"""Config keys renamed when every fast-weight layer's inner loop moved to one `model.inner` section.

Old keys keep working for one release: `migrate` moves them to their new place with a
`FutureWarning` naming each, so old config files, `--config.` overrides written as dicts, saved
`config.json` files and checkpoint metadata still resolve to the same model. docs/CONFIG.md lists
the table ("Renamed keys"). Which old section a model read is its registry entry's
`legacy_section` ("memory" for Titans and the baselines, "hope" for the HOPE models, which read
`out_norm`, `remat_every` and `closed_form` from `memory` and the rest from `hope`).
"""

from __future__ import annotations

import copy
import warnings

# old key -> new `model.inner` key (a leading "!" negates a bool)
MEMORY_KEYS = {"objective": "objective", "inner_opt": "optimizer", "momentum": "momentum",
               "decay": "retention", "lr_max": "lr_max", "lr_init": "lr_init",
               "momentum_init": "momentum_init", "forget_init": "forget_init",
               "chunk_size": "chunk_size", "remat_every": "remat_every",
               "closed_form": "closed_form", "doc_reset": "doc_reset",
               "conv_width": "conv_width", "out_norm": "out_norm"}
HOPE_KEYS = {"chunk_size": "chunk_size", "inner_optimizer": "optimizer", "objective": "objective",
             "momentum": "momentum", "weight_decay": "retention", "lr_max": "lr_max",
             "lr_init": "lr_init", "conv_width": "conv_width", "persist_state": "!doc_reset"}
RENAMED = {"memory": MEMORY_KEYS, "hope": HOPE_KEYS}


def _legacy_section(name) -> str:
    from hope_jax.models.config import registered_models

    spec = registered_models().get(name)
    return spec.legacy_section if spec is not None else "memory"


def migrate_model(model: dict, warn: bool = True) -> dict:
    """A `model` section dict with every renamed key moved to `inner` (a copy; the input is not
    changed). Keys of the section the model did not read are dropped."""
    found = {sec: [k for k in keys if k in (model.get(sec) or {})]
             for sec, keys in RENAMED.items()}
    if not any(found.values()):
        return model
    model = copy.deepcopy(dict(model))
    inner = dict(model.get("inner") or {})
    reads = ("memory", "hope") if _legacy_section(model.get("name", "transformer")) == "hope" \
        else ("memory",)
    moved = []
    for sec in ("memory", "hope"):  # the model's own section last: its values win
        section = dict(model[sec]) if found[sec] else None
        for old in found[sec]:
            value, new = section.pop(old), RENAMED[sec][old]
            moved.append(f"model.{sec}.{old} -> model.inner.{new.lstrip('!')}")
            if sec not in reads:
                continue
            if new.startswith("!"):
                new, value = new[1:], not value
            inner[new] = value
        if section is not None:
            model[sec] = section
    model["inner"] = inner
    if warn:
        warnings.warn("renamed config keys (they stop working in the next release; see "
                      "docs/CONFIG.md 'Renamed keys'): " + ", ".join(moved), FutureWarning,
                      stacklevel=3)
    return model


# `model.inner` keys added after runs were written, with the value such a run trained with where
# it differs from today's default (the default changed behaviour): a saved section without the
# key is read with this value, so resuming it under the new default is refused, not changed.
ADDED_INNER = {"grad_clip": 0.0}


def saved_model(model: dict) -> dict:
    """A model section read back from a run (config.json, checkpoint metadata) in today's names,
    with `ADDED_INNER` filled in where the run predates a key."""
    model = migrate_model(model, warn=False)
    inner = model.get("inner")
    if isinstance(inner, dict) and any(k not in inner for k in ADDED_INNER):
        model = {**model, "inner": {**ADDED_INNER, **inner}}
    return model


def migrate(raw: dict, warn: bool = True) -> dict:
    """A whole config dict with `migrate_model` applied to its `model` section."""
    if not isinstance(raw.get("model"), dict):
        return raw
    model = migrate_model(raw["model"], warn)
    return raw if model is raw["model"] else {**raw, "model": model}
