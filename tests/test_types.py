"""The strict-typed rooms stay strict: keys, blocks, protocol, stores and the scheduler core."""

from __future__ import annotations

import subprocess
import sys

import pytest

from .conftest import ROOT

STRICT = ["octostore/keys.py", "octostore/blocks.py", "octostore/protocol", "octostore/stores",
          "octostore/coordinator/scheduler.py"]


def test_mypy_strict() -> None:
    pytest.importorskip("mypy")
    result = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--ignore-missing-imports",
                             "--cache-dir", "/tmp/octo-mypy-cache", *STRICT],
                            cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
