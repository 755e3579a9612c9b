"""daad as a user installs it: a wheel built from the checkout, installed (not editable) into
a fresh venv, run from an unrelated folder. The venv reaches the already-installed
dependencies through a ``.pth`` line (nothing is downloaded), not the checkout."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO, SOURCE_ROOTS
from daad.registry.manifest import manifest_paths, read_manifest

LICENCES = ("CC-BY-NC-SA-4.0", "LicenseRef-CrackForest-NonCommercial", "LicenseRef-SD-saliency-900-research")


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """The bin/ folder of a fresh venv holding daad's wheel."""
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(tmp), str(REPO)],
                   check=True, capture_output=True, timeout=300)
    wheel = next(tmp.glob("daad-*.whl"))
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    purelib = next(venv.glob("lib/python*/site-packages"))
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([venv / "bin/python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    return venv / "bin"


def _daad(bin_dir: Path, cwd: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DAAD_MANIFESTS")}
    return subprocess.run([bin_dir / "daad", *args], cwd=cwd, env=base | (env or {}), capture_output=True,
                          text=True, timeout=600)


def test_the_wheel_carries_its_registry_and_builds_from_another_folder(installed, tmp_path):
    located = subprocess.run([installed / "python", "-c", "import daad.registry.manifest as m; print(m.__file__)"],
                             cwd=tmp_path, capture_output=True, text=True, check=True)
    assert not Path(located.stdout.strip()).is_relative_to(REPO)  # the installed copy, not the checkout
    version = _daad(installed, tmp_path, "--version")
    assert version.returncode == 0 and version.stdout.strip() == "daad 0.1.0"
    sources = _daad(installed, tmp_path, "sources", "--json")
    assert sources.returncode == 0, sources.stderr
    assert {"sd_saliency_900", "crackforest", "kolektorsdd"} <= {s["id"] for s in json.loads(sources.stdout)}
    stats = _daad(installed, tmp_path, "stats", "--json")
    accepted = sum(r.status == "accepted" and r.duplicate_of is None
                   for path in manifest_paths(REPO / "manifests") for r in read_manifest(path))
    assert sum(row["records"] for row in json.loads(stats.stdout)) == accepted > 2000

    roots = {f"DAAD_ROOT_{origin.upper()}": str(path) for origin, path in SOURCE_ROOTS.items()}
    accept = [arg for lic in LICENCES for arg in ("--accept-licence", lic)]
    build = _daad(installed, tmp_path, "build", "--no-download", "-q", *accept, *(f"--origin={o}" for o in SOURCE_ROOTS), env=roots)
    assert build.returncode == 0, build.stderr
    assert (tmp_path / "build/daad/README.md").is_file() and "built 1061 rows" in build.stdout


def test_a_missing_registry_and_a_missing_extra_are_one_line(installed, tmp_path):
    stats = _daad(installed, tmp_path, "stats", "--manifests", str(tmp_path / "nowhere"))
    assert stats.returncode == 3 and "--manifests" in stats.stderr and "DAAD_MANIFESTS" in stats.stderr
    assert "Traceback" not in stats.stderr
    code = "import sys; sys.modules['fiftyone'] = None; from daad.cli import main; sys.argv = sys.argv[1:]; main()"
    curate = subprocess.run([installed / "python", "-c", code, "daad", "curate", "open", "--no-app", "--origin", "crackforest"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert curate.returncode == 3 and "pip install 'daad[curate]'" in curate.stderr, curate.stderr
    assert "Traceback" not in curate.stderr and len(curate.stderr.strip().splitlines()) <= 2
    code = "import sys; sys.modules['torch'] = None; from daad.cli import main; sys.argv = sys.argv[1:]; main()"
    evaluate = subprocess.run([installed / "python", "-c", code, "daad", "eval", "--eval", "kolektorsdd",
                               "--root", f"kolektorsdd={SOURCE_ROOTS['kolektorsdd']}", "--generated", str(tmp_path), "--out", str(tmp_path / "r")],
                              cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert evaluate.returncode == 3 and 'pip install "daad[eval]"' in evaluate.stderr, evaluate.stderr


def test_every_daad_name_the_benchmarks_import_exists():
    """The benchmarks are not run in CI: every ``from daad... import`` in them (also inside their
    ``python -c`` snippets) must still name a module and attributes that exist."""
    import importlib
    import importlib.util
    import re

    found = []
    for script in sorted((REPO / "benchmarks").glob("*.py")):
        for module, names in re.findall(r"from (daad(?:\.\w+)*) import ([\w, ]+)", script.read_text(encoding="utf-8")):
            for name in (n.strip() for n in names.split(",")):
                found.append(f"{script.name}: {module}.{name}")
                exists = hasattr(importlib.import_module(module), name) or importlib.util.find_spec(f"{module}.{name}")
                assert exists, found[-1]
    assert len(found) > 20
