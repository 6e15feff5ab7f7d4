"""Packaging metadata: pyproject declares every dependency of requirements.txt with the same lower
bound (runtime deps as `dependencies`, the tests-and-lint block as the `dev` extra)."""

from __future__ import annotations

import os
import re
import tomllib

from tests.helpers import ROOT


def _name(spec: str) -> str:
    return re.split(r"[<>=!~\[; ]", spec, maxsplit=1)[0].lower().replace("_", "-")


def _requirements() -> tuple[dict[str, str], dict[str, str]]:
    """(runtime, dev) name -> spec from requirements.txt; dev = the '# tests and lint' block."""
    runtime, dev = {}, {}
    section = runtime
    with open(os.path.join(ROOT, "requirements.txt")) as f:
        for line in f:
            line = line.strip()
            if line.startswith("#"):
                if "tests and lint" in line:
                    section = dev
                elif section is dev:
                    section = runtime
                continue
            if line:
                section[_name(line)] = line.replace(" ", "")
    return runtime, dev


def test_pyproject_declares_requirements():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    deps = {_name(s): s.replace(" ", "") for s in project["dependencies"]}
    extra = {_name(s): s.replace(" ", "") for s in project["optional-dependencies"]["dev"]}
    runtime, dev = _requirements()
    assert runtime and dev and "jax" in runtime and "pytest" in dev
    assert deps == runtime
    assert extra == dev
    assert project["name"] == "hope_jax" and project["requires-python"] == ">=3.11"
