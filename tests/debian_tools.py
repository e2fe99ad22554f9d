"""Debian tools the browser and Prometheus tests run (`chromium`, `prometheus`, `promtool`).

`.ci/run` installs them; a test that finds one missing installs its package with apt-get
when it can (root), else it is skipped — except in CI (``CI`` set), where it fails.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

_tried: set[str] = set()


def debian_tool(binary: str, package: str) -> str:
    """The path of `binary`, installing Debian's `package` first if it is missing."""
    found = shutil.which(binary)
    if found is None and package not in _tried and os.geteuid() == 0 \
            and shutil.which("apt-get"):
        _tried.add(package)
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update"], env=env, capture_output=True, timeout=600)
        subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", package],
                       env=env, capture_output=True, timeout=1200)
        found = shutil.which(binary)
    if found is None:
        message = f"`{binary}` not found: apt-get install {package}"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return found
