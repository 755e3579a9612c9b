"""The real FiftyOne App serves a daad dataset: HTTP, its GraphQL API, and headless
Debian Chromium rendering it (screenshot kept in test-artifacts/); every process
started is gone afterwards, checked by PID."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import urllib.request
from pathlib import Path

import cv2
import psutil
import pytest

from conftest import REPO, SD_ROOT
from daad.curate.app import launch_app
from daad.curate.dataset import open_records
from daad.registry import Registry
from daad.registry.roots import Roots
from helpers.curation import shared_session, subset_manifests

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts"
NAME = "curate-app"


def _chromium(url: str, profile: Path, *mode: str, budget_ms: int = 20000) -> subprocess.CompletedProcess:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run scripts/setup.sh as root, or sudo apt-get install -y chromium fonts-dejavu-core")
    command = [
        str(CHROMIUM), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--window-size=1400,900", f"--virtual-time-budget={budget_ms}", *mode, url,
    ]
    return subprocess.run(command, capture_output=True, timeout=300, check=True)


def _graphql(base_url: str, query: str) -> dict:
    request = urllib.request.Request(
        f"{base_url}/graphql", json.dumps({"query": query}).encode(), {"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _mask_overlay_fraction(screenshot: Path) -> float:
    """Share of the sample grid's pixels coloured by the mask overlay (``MASK_COLOUR``, red)."""
    image = cv2.imread(str(screenshot))
    assert image is not None and image.shape == (900, 1400, 3), screenshot
    b, g, r = (image[140:, 310:, i].astype(int) for i in range(3))  # right of the sidebar, below the bars
    return float(((r > 120) & (r - g > 60) & (r - b > 60) & (g < 90)).mean())


def test_app_serves_the_dataset_to_a_real_browser(tmp_path):
    session = shared_session()
    registry = Registry(subset_manifests(tmp_path / "manifests"), Roots({"sd_saliency_900": SD_ROOT}))
    open_records(session, registry, registry.records(), NAME, masks_dir=tmp_path / "masks")

    server = launch_app(session, NAME, None, log=tmp_path / "app.log")
    family = {server.process.pid, *(c.pid for c in server.process.children(recursive=True))}
    try:
        assert server.url == f"http://127.0.0.1:{server.port}/datasets/{NAME}"
        with urllib.request.urlopen(server.url, timeout=30) as response:
            page = response.read().decode()
        assert response.status == 200 and '<div id="root">' in page and "<title>FiftyOne" in page
        data = _graphql(server.base_url, f'{{ dataset(name: "{NAME}") {{ name estimatedSampleCount }} }}')
        assert data["data"]["dataset"] == {"name": NAME, "estimatedSampleCount": 30}

        dom = _chromium(server.url, tmp_path / "profile-dom", "--dump-dom").stdout.decode()
        assert f">{NAME}<" in dom and ">Samples<" in dom  # the App opened this dataset's sample grid

        # The grid's tiles are drawn by web workers, which virtual time does not wait for;
        # on a busy machine a shot can catch them still loading, so give later shots more time.
        shot = ARTIFACTS / "curate_app.png"
        ARTIFACTS.mkdir(exist_ok=True)
        fractions = []
        for attempt, budget_ms in enumerate((120000, 240000, 480000)):
            shot.unlink(missing_ok=True)
            _chromium(server.url, tmp_path / f"profile-shot-{attempt}", f"--screenshot={shot}", budget_ms=budget_ms)
            fractions.append(_mask_overlay_fraction(shot))
            print(f"screenshot {attempt}: budget {budget_ms} ms, mask overlay {fractions[-1]:.4f}")
            if fractions[-1] > 0.02:
                break
        assert fractions[-1] > 0.02, fractions  # the grid shows the red anomaly masks
    finally:
        session.stop(server.process)
    assert not [pid for pid in family if psutil.pid_exists(pid)]


STANDALONE = """
import json, sys
from pathlib import Path
from daad.curate.app import launch_app
from daad.curate.dataset import open_records
from daad.curate.session import CurationSession
from daad.registry import Registry
from daad.registry.roots import Roots

registry = Registry(Path(sys.argv[1]), Roots({"sd_saliency_900": Path(sys.argv[2])}))
session = CurationSession(sys.argv[3])
open_records(session, registry, list(registry.records())[:3], "standalone", masks_dir=Path(sys.argv[3]) / "masks")
launch_app(session, "standalone", None)
print(json.dumps(sorted(session.pids())))
"""


def test_every_process_stops_when_the_program_exits(tmp_path):
    """A program that never calls close(): mongod, the App server and its children still stop."""
    manifests = subset_manifests(tmp_path / "manifests")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run(
        [sys.executable, "-c", STANDALONE, str(manifests), str(SD_ROOT), str(tmp_path / "db")],
        capture_output=True, text=True, timeout=300, env=env, cwd=tempfile.gettempdir(),
    )
    assert done.returncode == 0, done.stderr[-3000:]
    pids = json.loads(done.stdout.strip().splitlines()[-1])
    assert len(pids) >= 2  # mongod and the App server (plus its children)
    assert not [pid for pid in pids if psutil.pid_exists(pid)]
    assert not (tmp_path / "db" / "daad-mongod.json").exists()
