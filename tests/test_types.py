"""The strict-typed rooms stay strict (mypy --strict), and all of the code passes ruff."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import ROOT

STRICT = ["octostore/keys.py", "octostore/blocks.py", "octostore/protocol", "octostore/stores",
          "octostore/tasks.py", "octostore/settings.py", "octostore/config.py",
          "octostore/coordinator/scheduler.py", "octostore/coordinator/events.py",
          "octostore/coordinator/shuffle.py", "octostore/coordinator/inputs.py",
          "octostore/coordinator/roster.py", "octostore/worker/shuffle.py"]


def test_mypy_strict() -> None:
    pytest.importorskip("mypy")
    result = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--ignore-missing-imports",
                             "--cache-dir", "/tmp/octo-mypy-cache", *STRICT],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_lint_and_import_order() -> None:
    """The rules in pyproject.toml ([tool.ruff]): pyflakes, pycodestyle, bugbear, pyupgrade, import order."""
    result = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "."], cwd=ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
