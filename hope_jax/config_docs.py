"""Renders docs/CONFIG.md from the schema, so the reference can never drift from the code.

  python -m hope_jax.config_docs > docs/CONFIG.md
"""

from __future__ import annotations

import dataclasses
import typing

from hope_jax.config import Config
from hope_jax.config_legacy import RENAMED


def _rows(cls, prefix: str):
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        key = f"{prefix}.{f.name}"
        if dataclasses.is_dataclass(tp):
            yield from _rows(tp, key)
            continue
        default = f.default
        meta = f.metadata
        rule = []
        if meta.get("choices"):
            rule.append(" / ".join(f"`{c}`" for c in meta["choices"]))
        if meta.get("positive"):
            rule.append("> 0")
        if meta.get("nonneg"):
            rule.append(">= 0")
        name = getattr(tp, "__name__", str(tp)).replace("typing.", "")
        yield f"| `{key}` | {name} | `{default!r}` | {', '.join(rule)} | {meta.get('help', '')} |"


def render() -> str:
    out = [
        "# Config reference",
        "",
        "Generated from `hope_jax/config.py` by `python -m hope_jax.config_docs > docs/CONFIG.md`",
        "(regenerate it after changing the schema). Every key can be overridden on the command "
        "line,",
        "e.g. `--config.model.d_model=512`; the config is validated before anything runs.",
        "",
    ]
    for f in dataclasses.fields(Config):
        cls = typing.get_type_hints(Config)[f.name]
        out += [f"## `config.{f.name}`", "", (cls.__doc__ or "").strip().splitlines()[0], "",
                "| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
        out += list(_rows(cls, f"config.{f.name}"))
        out.append("")
    out += ["## Renamed keys", "",
            "The inner loop of every fast-weight layer moved to `config.model.inner`. The old keys "
            "still work for one",
            "release (a `FutureWarning` names each; saved `config.json` files and checkpoints are "
            "read in the new",
            "names); Titans and the baselines read them from `memory`, the HOPE models from `hope` "
            "(and `out_norm`,",
            "`remat_every`, `closed_form` from `memory`).", "",
            "| old key | new key |", "|---|---|"]
    for sec, keys in RENAMED.items():
        for old, new in keys.items():
            note = " (negated)" if new.startswith("!") else ""
            out.append(f"| `config.model.{sec}.{old}` | `config.model.inner.{new.lstrip('!')}`"
                       f"{note} |")
    out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(render())
