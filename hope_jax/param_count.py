"""Parameter-count report from `jax.eval_shape` (nothing is allocated).

  python -m hope_jax.param_count configs/hope_1_3b.py configs/titans_1_3b.py ...

Prints each config's count next to its nominal size (read from the file name: 340m, 760m, 1_3b).
"""

from __future__ import annotations

import importlib.util
import os
import sys

from hope_jax.config import Config, validate
from hope_jax.recipes import NOMINAL
from hope_jax.train.state import param_count


def load_config_file(path: str) -> Config:
    """Validated config of a `configs/*.py` file (its `get_config()`)."""
    spec = importlib.util.spec_from_file_location(os.path.basename(path)[:-3], path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return validate(mod.get_config())


def nominal(path: str) -> float | None:
    stem = os.path.basename(path)[:-3]
    for size, n in NOMINAL.items():
        if stem.endswith("_" + size):
            return n
    return None


def report(paths: list[str]) -> list[dict]:
    rows = []
    for path in paths:
        n = param_count(load_config_file(path))
        nom = nominal(path)
        rows.append({"config": path, "params": n, "nominal": nom,
                     "ratio": None if nom is None else n / nom})
    return rows


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__.strip())
        return 2
    print(f"{'config':40s} {'params':>14s} {'nominal':>10s} {'vs nominal':>10s}")
    for r in report(argv):
        nom = "-" if r["nominal"] is None else f"{r['nominal'] / 1e6:,.0f}M"
        ratio = "-" if r["ratio"] is None else f"{100 * (r['ratio'] - 1):+.1f}%"
        print(f"{r['config']:40s} {r['params'] / 1e6:13,.1f}M {nom:>10s} {ratio:>10s}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
