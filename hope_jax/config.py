"""Typed configuration schema and validation.

Experiments are written as `configs/<name>.py` files whose `get_config()` returns an
`ml_collections.ConfigDict`; command-line overrides (`--config.model.d_model=512`) are applied to
that dict by absl. Before anything runs, `validate()` turns the dict into the frozen dataclasses
below, so that an unknown key, a value of the wrong type, or an impossible combination (heads not
dividing the width, ...) fails at once with one line naming the key.

Each section is a dataclass; each field's `metadata` may carry `choices` (allowed values) and
`positive` / `nonneg` flags. Cross-field rules live in each section's `check()`.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Mapping
from typing import Any

from hope_jax.config_fields import ConfigError, field
from hope_jax.config_legacy import migrate
from hope_jax.models.config import ModelConfig
from hope_jax.optim.config import OptimConfig

__all__ = ["Config", "ConfigError", "DataConfig", "MeshConfig", "ModelConfig", "OptimConfig",
           "TrainConfig",
           "default_config_dict", "replace", "validate"]


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where text comes from and how it becomes fixed-length token sequences."""

    source: str = field("stdlib", choices=("stdlib", "files"),
                     help="stdlib = embedded Python-stdlib corpus; files = train_paths")
    train_paths: tuple[str, ...] = field(
        (), help="files or directories: UTF-8 text (any name), .jsonl, .parquet, .arrayrecord; "
                 "gzip/zstd read transparently")
    val_paths: tuple[str, ...] = field((), help="validation files; empty = hold out val_fraction")
    val_fraction: float = field(0.02, nonneg=True,
                                help="share of documents held out for validation")
    format: str = field("auto", choices=("auto", "text", "jsonl", "parquet", "arrayrecord"),
                        help="auto = by name (.jsonl .parquet .arrayrecord; else text)")
    text_field: str = field("text", help="field holding the text in jsonl/parquet records")
    tokenizer: str = field("byte", choices=("byte", "hf", "sentencepiece"))
    tokenizer_path: str = field("", help="tokenizer.json (hf) or .model (sentencepiece)")
    seq_len: int = field(256, positive=True)
    batch_size: int = field(16, positive=True, help="global batch (sequences per optimizer step)")
    seed: int = field(0, nonneg=True)
    shuffle: bool = field(True)
    max_doc_bytes: int = field(0, nonneg=True,
                               help="truncate documents longer than this; 0 = no limit")
    split_doc_bytes: int = field(32768, nonneg=True,
                                 help="cut longer text documents into pieces at line breaks; "
                                      "0 = never")
    retrieval_mix: float = field(0.0, nonneg=True,
                                 help="share of training documents that are synthetic S-NIAH "
                                      "retrieval samples with their answers (data/retrieval.py); "
                                      "0 = none")
    retrieval_len: int = field(0, nonneg=True,
                               help="longest retrieval sample in tokens (each draws a length in "
                                    "[len/2, len]); 0 = seq_len")

    def check(self, path: str) -> None:
        if not 0.0 <= self.val_fraction < 1.0:
            raise ConfigError(f"{path}.val_fraction={self.val_fraction} must be in [0, 1)")
        if not 0.0 <= self.retrieval_mix < 1.0:
            raise ConfigError(f"{path}.retrieval_mix={self.retrieval_mix} must be in [0, 1)")
        if self.source == "files" and not self.train_paths:
            raise ConfigError(f"{path}.source='files' needs {path}.train_paths")
        if self.tokenizer != "byte" and not self.tokenizer_path:
            raise ConfigError(f"{path}.tokenizer={self.tokenizer!r} needs {path}.tokenizer_path")


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """The outer loop: length, logging, validation and checkpoints."""

    steps: int = field(300, positive=True)
    seed: int = field(0, nonneg=True)
    log_every: int = field(10, positive=True)
    eval_every: int = field(100, nonneg=True, help="validation every N steps; 0 = only at the end")
    eval_batches: int = field(8, positive=True)
    ckpt_every: int = field(100, nonneg=True, help="checkpoint every N steps; 0 = only at the end")
    keep_ckpts: int = field(3, positive=True)
    async_ckpt: bool = field(True)
    progress: bool = field(True, help="show a progress bar")
    tensorboard: bool = field(True)
    memory_budget_gib: float = field(0.0, nonneg=True,
                                     help="fail before compiling when the ntp CMS backward pass "
                                          "must store more than this per device "
                                          "(models/ntp_memory.py); 0 = no check")


@dataclasses.dataclass(frozen=True)
class MeshConfig:
    """Device mesh data x fsdp x tensor and multi-host start-up (see `hope_jax.sharding`).

    The defaults use one device (single-device behaviour); `-1` fills an axis with the devices
    left over, e.g. `fsdp=-1` shards params and optimizer state over all devices.
    """

    data: int = field(1, help="data-parallel axis size (batch split, params replicated); -1 = fill")
    fsdp: int = field(1, help="fully-sharded data-parallel axis (batch and the params' embed dim "
                      "split); -1 = fill")
    tensor: int = field(1, help="tensor-parallel axis (mlp / heads / vocab dims split); -1 = fill")
    replicated_params: str = field("warn", choices=("warn", "error", "ignore"),
                                   help="a param > 1M elements left fully replicated on a mesh "
                                   "with fsdp x tensor > 1")
    distributed: str = field("auto", choices=("auto", "on", "off"),
                             help="jax.distributed.initialize: auto = when SLURM / Open MPI / "
                             "Cloud TPU / a coordinator address says so")
    coordinator_address: str = field("", help="host:port of process 0; '' = env "
                                     "JAX_COORDINATOR_ADDRESS or auto-detect")
    num_processes: int = field(0, nonneg=True, help="with coordinator_address; 0 = env "
                               "JAX_NUM_PROCESSES")
    process_id: int = field(-1, help="with coordinator_address; -1 = env JAX_PROCESS_ID")

    def check(self, path: str) -> None:
        sizes = {"data": self.data, "fsdp": self.fsdp, "tensor": self.tensor}
        for k, v in sizes.items():
            if v == 0 or v < -1:
                raise ConfigError(f"{path}.{k}={v} must be >= 1 or -1 (fill)")
        if list(sizes.values()).count(-1) > 1:
            raise ConfigError(f"{path}: at most one of data/fsdp/tensor may be -1, got {sizes}")
        if self.process_id < -1:
            raise ConfigError(f"{path}.process_id={self.process_id} must be >= 0 or -1 (env)")


@dataclasses.dataclass(frozen=True)
class Config:
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    optim: OptimConfig = dataclasses.field(default_factory=OptimConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    mesh: MeshConfig = dataclasses.field(default_factory=MeshConfig)

    def check(self, path: str) -> None:
        if self.data.batch_size % self.optim.grad_accum:
            raise ConfigError(
                f"config.optim.grad_accum={self.optim.grad_accum} must divide "
                f"config.data.batch_size={self.data.batch_size}"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)


def _type_name(tp) -> str:
    return getattr(tp, "__name__", str(tp))


def _coerce(value: Any, tp: Any, path: str) -> Any:
    """Checks `value` against annotation `tp`; returns it converted (int->float, list->tuple)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, Mapping) and not hasattr(value, "to_dict"):
            raise ConfigError(f"{path} must be a section (dict), got {value!r}")
        return _build(tp, value, path)
    if origin is tuple:
        (elem, *_rest) = typing.get_args(tp)
        if isinstance(value, str):
            value = tuple(v for v in value.split(",") if v)
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{path} must be a list of {_type_name(elem)}, got {value!r}")
        return tuple(_coerce(v, elem, f"{path}[{i}]") for i, v in enumerate(value))
    if origin in (typing.Union, types.UnionType):
        for arg in typing.get_args(tp):
            if arg is type(None) and value is None:
                return None
        (arg,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(value, arg, path)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path} must be a bool, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path} must be an int, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path} must be a float, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{path}: unsupported annotation {tp}")  # pragma: no cover


def _build(cls, raw: Any, path: str):
    raw = raw.to_dict() if hasattr(raw, "to_dict") else dict(raw)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key {path}.{unknown[0]} (known: {sorted(fields)})")
    kwargs = {}
    for name, value in raw.items():
        f, p = fields[name], f"{path}.{name}"
        value = _coerce(value, hints[name], p)
        meta = f.metadata
        if meta.get("choices") and value not in meta["choices"]:
            raise ConfigError(f"{p}={value!r} is not one of {list(meta['choices'])}")
        if meta.get("positive") and not value > 0:
            raise ConfigError(f"{p}={value!r} must be > 0")
        if meta.get("nonneg") and not value >= 0:
            raise ConfigError(f"{p}={value!r} must be >= 0")
        kwargs[name] = value
    obj = cls(**kwargs)
    if hasattr(obj, "check"):
        obj.check(path)
    return obj


def validate(raw: Any) -> Config:
    """ConfigDict / dict / Config -> validated `Config`. Raises `ConfigError` with one line."""
    if isinstance(raw, Config):
        raw = raw.to_dict()
    raw = raw.to_dict() if hasattr(raw, "to_dict") else dict(raw)
    return _build(Config, migrate(raw), "config")


def default_config_dict():
    """A ConfigDict holding every key with its default: the base each `configs/*.py` updates.

    Starting config files from the full schema means every key can be overridden on the command
    line (`--config.data.seq_len=512`) even when the file does not mention it.
    """
    from ml_collections import ConfigDict

    return ConfigDict(_raw_defaults(Config))


def _raw_defaults(cls) -> dict:
    """Every field's declared default, sentinels kept (`Config().to_dict()` would hold the
    default model's filled-in inner-loop values, which a config naming another model must not
    inherit)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING:
            out[f.name] = _raw_defaults(f.default_factory)
        else:
            out[f.name] = f.default
    return out


def replace(cfg: Config, **overrides: Any) -> Config:
    """A validated copy with dotted-path overrides, e.g. replace(c, **{'model.d_model': 64})."""
    d = cfg.to_dict()
    for key, value in overrides.items():
        node = d
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        if leaf not in node:
            raise ConfigError(f"unknown config key config.{key}")
        node[leaf] = value
    return validate(d)
