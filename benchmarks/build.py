"""Build throughput on the real sources, next to a plain ``cp -r`` of the same image files
(a full build, and a rebuild with nothing changed, which keeps the shards) and to the bare
I/O floor of any parquet build (the same bytes read and written into one uncompressed
parquet file by pyarrow: no masks, no checks, no sync); how much a second CPU adds here;
the memory of a build and of a validate of a synthetic 100k-record manifest; and a build at
full scale (every source ``daad build`` reaches, at its real count and image sizes: stand-ins
from :mod:`standins` where a source's files are not here), next to the bytes -> parquet floor
of the same images in the same rounds.

Run: ``python benchmarks/build.py [--records 100000] [--full-scale-only]``. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from common import REPO, SOURCE_ROOTS  # noqa: E402  (puts the checkout on sys.path)

import standins  # noqa: E402
from daad.registry.exclusion import HASHES_DIR  # noqa: E402
from daad.registry.manifest import manifest_paths, read_manifest, write_manifest  # noqa: E402

ROOTS = SOURCE_ROOTS
ROUNDS = 5
_BUILD = (
    "import sys, json, time, resource; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
    "from daad.dataset.build import build; from daad.registry import Registry; from daad.registry.roots import Roots;"
    "import multiprocessing, daad.processes as p;"
    # the start method daad used before its forkserver, measured in the same rounds
    "import daad.dataset.build as b; fork = lambda modules: multiprocessing.get_context('fork');"
    "p.start_server, b.start_server = (fork, fork) if sys.argv[6] == 'fork' else (p.start_server, b.start_server);"
    "roots = json.loads(sys.argv[3]); t = time.perf_counter();"
    "s = build(Registry(Path(sys.argv[2]), Roots(roots)), Path(sys.argv[4]), progress=False, reuse=sys.argv[5] == '1');"
    "print(json.dumps({'seconds': time.perf_counter() - t, 'rows': s.accepted, 'bytes': s.image_bytes,"
    "'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))"
)
_VALIDATE = (
    "import sys, json, time, resource; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
    "from daad.registry.validate import validate; from daad.registry import Registry; from daad.registry.roots import Roots;"
    "t = time.perf_counter(); r = validate(Registry(Path(sys.argv[2]), Roots(json.loads(sys.argv[3]))), progress=False);"
    "print(json.dumps({'seconds': time.perf_counter() - t, 'accepted': r.accepted,"
    "'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))"
)

_FLOOR = (
    "import sys, time, pyarrow as pa, pyarrow.parquet as pq; files = open(sys.argv[1]).read().splitlines();"
    "pa.array([b'']);"  # the first conversion imports pandas (0.4 s here); a build has it imported before it starts
    "t = time.perf_counter(); table = pa.table({'image': [open(f, 'rb').read() for f in files]});"
    "pq.write_table(table, sys.argv[2], compression='none', use_dictionary=False, write_statistics=False);"
    "print(time.perf_counter() - t)"
)
_DEDUP = (
    "import sys, json, time, resource; from pathlib import Path; sys.path.insert(0, sys.argv[1]);"
    "from daad.registry.dedup import dedup; from daad.registry import Registry; from daad.registry.roots import Roots;"
    "t = time.perf_counter(); r = dedup(Registry(Path(sys.argv[2]), Roots(json.loads(sys.argv[3]))), dry_run=True,"
    "fixed=frozenset(json.loads(sys.argv[4])));"
    "print(json.dumps({'seconds': time.perf_counter() - t, 'records': sum(r.records.values()), 'marks': len(r.marks),"
    "'rss_mb': resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))"
)
_SPIN = "import time; t = time.process_time(); x = 0\nwhile time.process_time() - t < 1: x += 1\nprint(x)"


def run_build(manifests: Path, roots: dict[str, Path], out: Path, reuse: bool = False, start: str = "forkserver") -> dict:
    """One build in a fresh process (its workers started by ``start``: daad's forkserver, or ``fork``)."""
    roots_json = json.dumps({k: str(v) for k, v in roots.items()})
    result = subprocess.run(
        [sys.executable, "-c", _BUILD, str(REPO), str(manifests), roots_json, str(out), "1" if reuse else "0", start],
        capture_output=True, text=True, check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def scratch_manifests(tmp: Path, origins: list[str]) -> Path:
    dest = tmp / "manifests"
    dest.mkdir()
    for name in ("sources.toml", "exclusions.toml", "licences.toml", "downloads.toml"):
        if (REPO / "manifests" / name).exists():
            shutil.copy(REPO / "manifests" / name, dest)
    if (REPO / "manifests" / HASHES_DIR).is_dir():  # near copies are looked up as in a real build
        shutil.copytree(REPO / "manifests" / HASHES_DIR, dest / HASHES_DIR)
    for origin in origins:
        shutil.copy(REPO / "manifests" / f"{origin}.jsonl", dest)
    return dest


def real_sources(tmp: Path) -> None:
    available = [p.stem for p in manifest_paths(REPO / "manifests") if p.stem in ROOTS and ROOTS[p.stem].is_dir()]
    manifests = scratch_manifests(tmp, available)
    files = [
        ROOTS[r.origin] / r.image.path
        for origin in available
        for r in read_manifest(manifests / f"{origin}.jsonl")
        if r.status == "accepted" and r.anomaly_class != "unmapped"
    ]
    staging = tmp / "images"
    for i, f in enumerate(files):  # the exact image files the build reads, as one tree for cp -r
        (staging / str(i // 1000)).mkdir(parents=True, exist_ok=True)
        os.link(f, staging / str(i // 1000) / f"{i}{f.suffix}") if _same_fs(f, staging) else shutil.copy(f, staging / str(i // 1000) / f"{i}{f.suffix}")
    size = sum(f.stat().st_size for f in files)
    cached = files + sorted(staging.rglob("*.*"))  # what the build reads, and what cp reads
    listing = tmp / "files.txt"
    listing.write_text("\n".join(map(str, files)))
    times: dict[str, list[float]] = {
        "cp -r": [], "cp -r, sync": [], "bytes -> parquet": [], "daad build": [], "daad build --reuse": [],
        "build, fork workers": [],
    }
    roots = {o: ROOTS[o] for o in available}
    for k in range(ROUNDS):  # each timed step starts with nothing left to write back, the images cached
        target = tmp / f"cp{k}"
        _settle(tmp, cached)
        t = time.perf_counter()
        subprocess.run(["cp", "-r", str(staging), str(target)], check=True)
        times["cp -r"].append(time.perf_counter() - t)
        subprocess.run(["sync", "-f", str(target)], check=True)  # on disk, as a build's output is before it counts
        times["cp -r, sync"].append(time.perf_counter() - t)
        shutil.rmtree(target)
        _settle(tmp, cached)
        times["bytes -> parquet"].append(parquet_floor(listing, tmp / "floor.parquet"))
        _settle(tmp, cached)
        stats = run_build(manifests, roots, tmp / "out" / "daad")
        times["daad build"].append(stats["seconds"])
        _settle(tmp, cached)
        times["daad build --reuse"].append(run_build(manifests, roots, tmp / "out" / "daad", reuse=True)["seconds"])
        _settle(tmp, cached)
        times["build, fork workers"].append(run_build(manifests, roots, tmp / "out" / "fork", start="fork")["seconds"])
    print(f"real sources: {', '.join(available)}: {len(files)} records, {size / 1e6:.1f} MB of images; "
          f"{ROUNDS} rounds (seconds: best, median)")
    for name, values in times.items():
        best, median = min(values), statistics.median(values)
        print(f"  {name:<19}: {best:.3f} s  {statistics.median(values):.3f} s  {size / 1e6 / best:7.1f} MB/s  "
              f"{len(files) / best:6.0f} images/s")
    print(f"  (build peak RSS {stats['rss_mb']:.0f} MB; "
          "the rebuild with nothing changed keeps the shards)")
    ratios = [b / f for f, b in zip(times["build, fork workers"], times["daad build"])]
    print(f"  start method: build with forkserver workers / with fork workers, time: "
          f"{min(times['daad build']) / min(times['build, fork workers']):.2f} best vs best, per round {min(ratios):.2f}..{max(ratios):.2f} (above 1: what the forkserver costs)")
    for base in ("cp -r", "cp -r, sync", "bytes -> parquet"):
        ratios = [c / b for c, b in zip(times[base], times["daad build"])]
        print(f"  build / {base} rate: best vs best {min(times[base]) / min(times['daad build']):.2f}, "
              f"per round {min(ratios):.2f}..{max(ratios):.2f}; unchanged rebuild "
              f"{min(times[base]) / min(times['daad build --reuse']):.2f}")


def full_scale(tmp: Path, rounds: int) -> None:
    """The whole reachable DAAD in one build: time and peak RSS, against the floor of its bytes."""
    t = time.perf_counter()
    manifests, roots = standins.full_scale(REPO, ROOTS, tmp / "full")
    made = time.perf_counter() - t
    built = [r for p in manifest_paths(manifests) for r in read_manifest(p)
             if r.status == "accepted" and r.anomaly_class != "unmapped" and r.duplicate_of is None
             and r.image.path and r.origin in roots]
    files = [roots[r.origin] / r.image.path for r in built]
    size = sum(f.stat().st_size for f in files)
    listing = tmp / "full-files.txt"
    listing.write_text("\n".join(map(str, files)))
    cached = sorted(set(files))
    times: dict[str, list[float]] = {"bytes -> parquet": [], "daad build": []}
    for _ in range(rounds):
        _settle(tmp, cached)
        times["bytes -> parquet"].append(parquet_floor(listing, tmp / "floor.parquet"))
        _settle(tmp, cached)
        stats = run_build(manifests, roots, tmp / "full-out" / "daad")
        times["daad build"].append(stats["seconds"])
        shutil.rmtree(tmp / "full-out")
    real = sorted(o for o in roots if roots[o] == ROOTS.get(o))
    print(f"full scale: {stats['rows']} rows ({len(built)} expected), {size / 1e9:.2f} GB of images, "
          f"{len(cached)} distinct files; real files: {', '.join(real)}; stand-ins for the rest (made in {made:.0f} s); "
          f"{rounds} rounds (seconds: best, median)")
    for name, values in times.items():
        best = min(values)
        print(f"  {name:<19}: {best:.1f} s  {statistics.median(values):.1f} s  {size / 1e6 / best:7.1f} MB/s  "
              f"{len(files) / best:6.0f} images/s")
    ratios = [b / f for f, b in zip(times["bytes -> parquet"], times["daad build"])]
    print(f"  build / floor, time: best vs best {min(times['daad build']) / min(times['bytes -> parquet']):.2f}, "
          f"per round {min(ratios):.2f}..{max(ratios):.2f}; build peak RSS {stats['rss_mb']:.0f} MB")
    # What `daad download` adds once it has written manifests: the dedup of them against every other origin.
    fixed = sorted(set(roots) - set(standins.DOWNLOADED))
    args = [sys.executable, "-c", _DEDUP, str(REPO), str(manifests), json.dumps({k: str(v) for k, v in roots.items()}),
            json.dumps(fixed)]
    checked = json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout)
    print(f"  download-time dedup ({', '.join(standins.DOWNLOADED)} against the rest): {checked['seconds']:.1f} s for "
          f"{checked['records']} records, {checked['marks']} marks, peak RSS {checked['rss_mb']:.0f} MB")


def cpu_scaling() -> None:
    """Work done by two CPU-bound processes at once, against one alone (2.0 = two whole cores)."""
    alone = int(subprocess.run([sys.executable, "-c", _SPIN], capture_output=True, text=True, check=True).stdout)
    pair = [subprocess.Popen([sys.executable, "-c", _SPIN], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    both = sum(int(p.communicate()[0]) for p in pair)
    print(f"CPUs: {os.cpu_count()}; two busy processes do {both / alone:.2f}x the work of one in the same CPU time")


def synthetic(tmp: Path, sizes: list[int]) -> None:
    """Records pointing at a small pool of real files: time and peak RSS as the count grows."""
    pool = list(read_manifest(REPO / "manifests" / "sd_saliency_900.jsonl"))[:200]
    print("synthetic manifests (records -> seconds, records/s, peak RSS):")
    for n in sizes:
        manifests = tmp / f"syn{n}"
        manifests.mkdir()
        for name in ("sources.toml", "exclusions.toml", "licences.toml"):
            if (REPO / "manifests" / name).exists():
                shutil.copy(REPO / "manifests" / name, manifests)
        write_manifest(
            manifests / "sd_saliency_900.jsonl",
            (replace(pool[i % len(pool)], id=f"sd_saliency_900/syn{i:07d}") for i in range(n)),
        )
        stats = run_build(manifests, {"sd_saliency_900": ROOTS["sd_saliency_900"]}, tmp / f"synout{n}" / "daad")
        print(f"  {n:>7} records: {stats['seconds']:7.1f} s  {n / stats['seconds']:7.0f} rec/s  "
              f"peak RSS {stats['rss_mb']:6.0f} MB")
        checked = run_validate(manifests, {"sd_saliency_900": ROOTS["sd_saliency_900"]})
        print(f"  {'':>7} validate: {checked['seconds']:7.1f} s  {n / checked['seconds']:7.0f} rec/s  "
              f"peak RSS {checked['rss_mb']:6.0f} MB")
        shutil.rmtree(tmp / f"synout{n}")


def run_validate(manifests: Path, roots: dict[str, Path]) -> dict:
    """``daad validate`` in a fresh process: seconds, records accepted, peak RSS."""
    args = [sys.executable, "-c", _VALIDATE, str(REPO), str(manifests), json.dumps({k: str(v) for k, v in roots.items()})]
    return json.loads(subprocess.run(args, capture_output=True, text=True, check=True).stdout)


def parquet_floor(listing: Path, out: Path) -> float:
    """Seconds to write the files named in ``listing`` into one parquet file ``out`` (then removed),
    in a fresh process: the floor of any parquet build of those bytes."""
    floor = subprocess.run([sys.executable, "-c", _FLOOR, str(listing), str(out)], capture_output=True, text=True, check=True)
    out.unlink()
    return float(floor.stdout)


def _settle(path: Path, files: list[Path]) -> None:
    """Write back everything pending on ``path``'s file system, then read ``files`` (so that
    every timed step starts from the same state: nothing to write back, the images cached)."""
    subprocess.run(["sync", "-f", str(path)], check=True)
    for f in files:
        f.read_bytes()


def _same_fs(a: Path, b: Path) -> bool:
    b.mkdir(parents=True, exist_ok=True)
    return a.stat().st_dev == b.stat().st_dev


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--records", type=int, nargs="*", default=[10_000, 50_000, 100_000])
    parser.add_argument("--full-scale-rounds", type=int, default=2)
    parser.add_argument("--full-scale-only", action="store_true", help="Only the full-scale build and its floor.")
    args = parser.parse_args()
    cpu_scaling()
    with tempfile.TemporaryDirectory() as tmp:
        if not args.full_scale_only:
            real_sources(Path(tmp))
        full_scale(Path(tmp), args.full_scale_rounds)
        if not args.full_scale_only:
            synthetic(Path(tmp), args.records)


if __name__ == "__main__":
    main()
