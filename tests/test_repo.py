"""Repository wiring: CI runs exactly the README's test command; configs and docs exist."""

import os
import re

from tests.helpers import ROOT


def _read(*parts):
    with open(os.path.join(ROOT, *parts)) as f:
        return f.read()


def _readme_commands():
    return re.findall(r"```bash\n(python3 -m venv [^\n]+)\n```", _read("README.md"))


def test_readme_has_exactly_two_setup_commands():
    cmds = _readme_commands()
    assert len(cmds) == 2, cmds
    assert "train.py" in cmds[0] and "pytest" in cmds[1]


def test_ci_runs_the_readme_test_command():
    test_cmd = _readme_commands()[1]
    ci = _read(".ci", "run")
    venv, _, rest = test_cmd.partition(" && . .venv/bin/activate && ")
    assert venv in ci and rest in ci.splitlines(), (rest, ci)
    assert os.access(os.path.join(ROOT, ".ci", "run"), os.X_OK)
    assert '"$rc" -eq 5' in ci  # "no tests collected" fails CI
