"""``daad push``: publish a built dataset folder to a Hugging Face Hub dataset repo.

Before anything goes, every shard's ``origin`` and ``licence`` columns are read and each
licence is looked up in ``licences.toml``: rows whose licence is ``unknown``, not in the
catalogue, or does not grant redistribution are refused (named by licence, origin and
count) unless forced. The upload goes through ``huggingface_hub`` (``HF_ENDPOINT`` picks a
mirror; the token is ``--token``, else ``HF_TOKEN``, else the one ``hf auth login`` saved),
one commit per ``data/<origin>/`` folder and a last one for the card and the rest, so the
card appears only once every shard is there and a failure names the commits that landed.
Every HTTP request has a deadline (connect, read and write timeouts); the library retries
5xx and timeouts a bounded number of times.
"""

from __future__ import annotations

import os
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from daad.errors import DaadError
from daad.licences import UNKNOWN, LicenceCatalogue

TIMEOUT_S = 60.0
"""Default deadline of one HTTP wait (connect, each read, each write), in seconds."""
CARD = "README.md"
COMMIT_MESSAGE = "Upload DAAD build (daad push)"


class PushError(DaadError):
    """A build could not be published (bad folder, refused licences, no token, upload failure)."""


class LicenceRefusedError(PushError):
    """The build holds rows whose licence does not allow republishing them."""


@dataclass(frozen=True, slots=True)
class BuildFile:
    """One file of the build, as it will be named in the repo."""

    path: str
    size: int


@dataclass
class PushPlan:
    """What ``daad push`` would upload from ``folder``, and the rows its licences block."""

    folder: Path
    files: list[BuildFile]
    rows: Counter = field(default_factory=Counter)
    """licence -> rows."""
    blocked: dict[str, Counter] = field(default_factory=dict)
    """licence that does not allow redistribution -> origin -> rows."""

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)

    def blocked_line(self) -> str:
        """``N rows from K origin(s): origin (licence) n, ...``, or empty when nothing is blocked."""
        if not self.blocked:
            return ""
        per_origin = sorted((origin, lic, n) for lic, origins in self.blocked.items() for origin, n in origins.items())
        total = sum(n for *_, n in per_origin)
        names = ", ".join(f"{origin} ({lic}) {n}" for origin, lic, n in per_origin)
        return f"{total} rows from {len({o for o, *_ in per_origin})} origin(s) not cleared for redistribution: {names}"

    def commits(self) -> list[list[BuildFile]]:
        """The files in upload order: one group per ``data/<part>/`` folder, then everything else."""
        groups: dict[str, list[BuildFile]] = defaultdict(list)
        rest = []
        for f in self.files:
            parts = PurePosixPath(f.path).parts
            if parts[0] == "data" and len(parts) > 2:
                groups[parts[1]].append(f)
            else:
                rest.append(f)
        return [groups[k] for k in sorted(groups)] + ([rest] if rest else [])


def plan_push(folder: Path, catalogue: LicenceCatalogue) -> PushPlan:
    """The files of the build in ``folder`` (hidden ones left out) and its licence counts;
    :class:`PushError` when ``folder`` is not a built dataset."""
    folder = Path(folder)
    if not (folder / CARD).is_file():
        raise PushError(f"{folder} is not a built dataset (no {CARD}): run `daad build --out {folder}` first")
    files = [
        BuildFile(p.relative_to(folder).as_posix(), p.stat().st_size)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]
    shards = [f.path for f in files if f.path.endswith(".parquet")]
    if not shards:
        raise PushError(f"{folder} holds no parquet shard: run `daad build --out {folder}` first")
    plan = PushPlan(folder, files)
    for shard in shards:
        for (origin, lic), n in _licence_counts(folder / shard).items():
            plan.rows[lic] += n
            if lic == UNKNOWN or lic not in catalogue or not catalogue[lic].redistribution:
                plan.blocked.setdefault(lic, Counter())[origin] += n
    return plan


def _licence_counts(path: Path) -> Counter:
    """(origin, licence) -> rows of one shard (a shard without these columns counts as ``unknown``)."""
    import pyarrow.parquet as pq

    try:
        names = pq.read_schema(path).names
        columns = [c for c in ("origin", "licence") if c in names]
        table = pq.read_table(path, columns=columns)
    except (OSError, ValueError) as exc:
        raise PushError(f"{path}: not a readable parquet shard ({exc})") from None
    origins = table.column("origin").to_pylist() if "origin" in columns else ["?"] * table.num_rows
    licences = table.column("licence").to_pylist() if "licence" in columns else [UNKNOWN] * table.num_rows
    return Counter(zip(origins, (lic or UNKNOWN for lic in licences)))


@dataclass
class PushResult:
    """What reached the repo."""

    repo_url: str
    committed: list[BuildFile]
    commit_urls: list[str]


def push(
    plan: PushPlan,
    repo_id: str,
    *,
    token: str | None = None,
    private: bool = False,
    force: bool = False,
    timeout: float = TIMEOUT_S,
) -> PushResult:
    """Upload ``plan``'s files to the dataset repo ``repo_id`` (created if missing; made private
    when ``private``, even if it existed). Refuses blocked licences unless ``force``; on a failed commit raises
    :class:`PushError` naming the files that went and those that did not."""
    if plan.blocked and not force:
        raise LicenceRefusedError(
            f"refusing to publish {plan.folder}: {plan.blocked_line()}; rebuild without them "
            "(`daad build --licence-policy redistributable`) or pass --force if you hold the right to republish them"
        )
    import httpx2
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import get_token

    token = token or get_token()
    if not token:
        raise PushError("no Hugging Face token: pass --token, set HF_TOKEN, or run `hf auth login`")
    _set_deadline(timeout)
    api = HfApi(endpoint=os.environ.get("HF_ENDPOINT", "").rstrip("/") or None, token=token)
    done: list[BuildFile] = []
    urls: list[str] = []
    repo_url = repo_id
    try:
        repo = api.create_repo(repo_id, repo_type="dataset", private=private or None, exist_ok=True)
        repo_url, repo_id = str(repo), repo.repo_id
        if private:  # a repo that existed keeps its visibility otherwise
            api.update_repo_settings(repo_id, repo_type="dataset", private=True)
        for group in plan.commits():
            operations = [CommitOperationAdd(f.path, plan.folder / f.path) for f in group]
            info = api.create_commit(repo_id, operations, repo_type="dataset", commit_message=COMMIT_MESSAGE)
            done += group
            urls.append(info.commit_url)
    except (HfHubHTTPError, httpx2.HTTPError, OSError, ValueError, RuntimeError) as exc:
        raise PushError(_failure(plan, repo_url, done, exc)) from None
    return PushResult(repo_url, done, urls)


def _failure(plan: PushPlan, repo: str, done: list[BuildFile], exc: Exception) -> str:
    left = [f for f in plan.files if f not in done]
    went = f"{len(done)} file(s), {format_size(sum(f.size for f in done))} committed" if done else "nothing committed"
    cause = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    shown = ", ".join(f.path for f in left[:5]) + (f" and {len(left) - 5} more" if len(left) > 5 else "")
    return (f"push to {repo} failed ({cause}): {went}; not uploaded: {len(left)} file(s), "
            f"{format_size(sum(f.size for f in left))} ({shown}); run the same `daad push` again to send the rest")


def _set_deadline(timeout: float) -> None:
    """Make every request huggingface_hub sends give up after ``timeout`` seconds without progress."""
    import httpx2
    from huggingface_hub.utils import _http, set_client_factory

    def client() -> httpx2.Client:
        session = _http.default_client_factory()
        session.timeout = httpx2.Timeout(timeout)
        return session

    set_client_factory(client)


def format_size(n: int) -> str:
    """``812 B``, ``3.4 MiB`` ..."""
    value = float(n)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024:
            return f"{value:.0f} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"
