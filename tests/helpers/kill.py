"""Kill -9 a daad command at a random moment, and look at what it left where readers look."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[2]
KILLS = 20


def daad_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "daad", *args]


def timed_run(command: list[str], env: dict[str, str]) -> float:
    """Run ``command`` to completion (it must succeed); its wall time in seconds."""
    start = time.monotonic()
    result = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return time.monotonic() - start


def kill_moments(window: float, seed: int) -> list[float]:
    """``KILLS`` moments spread over ``[0, 1.1 * window)``: one uniformly random moment per
    equal slice, so that the start, the middle and the final writes all get hit."""
    rng = np.random.default_rng(seed)
    return [1.1 * window * (i + rng.random()) / KILLS for i in range(KILLS)]


def run_and_kill(command: list[str], env: dict[str, str], after: float) -> bool:
    """Start ``command`` and send it SIGKILL ``after`` seconds later; ``True`` when it was
    killed, ``False`` when it had finished (successfully) before."""
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, err = proc.communicate(timeout=after)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return True
    assert proc.returncode == 0, err.decode()
    return False


def visible_files(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` that a reader would look at (no hidden file or folder), by relative path."""
    files = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith("."):
                path = Path(dirpath) / name
                files[path.relative_to(folder).as_posix()] = path.read_bytes()
    return files
