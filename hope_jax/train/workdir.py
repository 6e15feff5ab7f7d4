"""Run directory conventions: the resolved config file and the metadata stored in checkpoints."""

from __future__ import annotations

import json
import os

import jax

from hope_jax.config import Config
from hope_jax.train.checkpoint import CheckpointError, config_diff, model_defaults

CONFIG_FILE = "config.json"


def run_meta(cfg: Config, tokenizer) -> dict:
    """What a checkpoint must agree with to be restored: model config and tokenizer identity."""
    return {"model": json.loads(json.dumps(cfg.to_dict()["model"])), "tokenizer": tokenizer.name,
            "vocab_size": tokenizer.vocab_size}


def prepare_workdir(cfg: Config, workdir: str, tokenizer) -> None:
    """Creates `workdir` and writes the resolved config, refusing a different model/tokenizer.

    An existing `config.json` is never overwritten: if only run settings (steps, lr, ...) changed,
    the new resolved config is written beside it as `config.resume.json`.
    """
    if os.path.exists(workdir) and not os.path.isdir(workdir):
        raise CheckpointError(f"--workdir={workdir} exists and is not a directory")
    if jax.process_index() != 0:
        return
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, CONFIG_FILE)
    text = cfg.to_json()
    if not os.path.exists(path):
        with open(path, "w") as f:
            f.write(text + "\n")
        return
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is unreadable ({e}); nothing was changed") from e
    current = json.loads(text)
    problems = config_diff(saved.get("model", {}), current["model"], "config.model", "workdir",
                           model_defaults())
    for key in ("tokenizer", "tokenizer_path"):
        if saved.get("data", {}).get(key) != current["data"][key]:
            problems.append(f"config.data.{key}: workdir {saved.get('data', {}).get(key)!r} "
                            f"vs config {current['data'][key]!r}")
    if problems:
        raise CheckpointError(
            f"{workdir} holds a run with a different model/tokenizer ({problems[0]}); use another "
            "--workdir or matching settings. Nothing was changed."
        )
    if saved != current:
        with open(os.path.join(workdir, "config.resume.json"), "w") as f:
            f.write(text + "\n")
