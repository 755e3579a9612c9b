"""``daad audit``: prove after the fact that a generated dataset did not leak.

Every generated row records the ids of the real anomalies it used (``source_ids``).
The audit re-checks each of them against the exclusion rules of an evaluation dataset
(origin and near-duplicate) and against the registry (an id the registry does not
know cannot be checked, so it is a violation too).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq

from daad.errors import DaadError
from daad.registry.registry import Registry


@dataclass(frozen=True, slots=True)
class Violation:
    row_id: str
    source_id: str
    reason: str

    def __str__(self) -> str:
        return f"{self.row_id} used {self.source_id}: {self.reason}"


@dataclass
class AuditReport:
    evaluation: str
    rows: int = 0
    sources_checked: int = 0
    violations: list[Violation] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def audit(generated: Path, evaluation: str, registry: Registry) -> AuditReport:
    """Check every ``source_ids`` entry of the dataset folder ``generated`` for ``evaluation``."""
    files = sorted(Path(generated).glob("data/*.parquet"))
    if not files:
        raise DaadError(f"{generated}: no data/*.parquet shards; is this a generated dataset folder?")
    rule = registry.rules.rule(evaluation)
    report = AuditReport(evaluation)
    if rule is not None and rule.near_duplicates and registry.rules.hashes(evaluation) is None:
        report.warnings.append(
            f"no evaluation hashes at {registry.rules.hashes_path(evaluation)}: near copies were not checked; "
            f"run `daad exclusions hash {evaluation} --root {evaluation}=PATH`"
        )
    uses: list[tuple[str, str]] = []
    for path in files:
        table = pq.read_table(path, columns=["id", "source_ids"])
        for row_id, sources in zip(table.column("id").to_pylist(), table.column("source_ids").to_pylist()):
            report.rows += 1
            uses += [(row_id, sid) for sid in sources or ()]
    wanted = {sid for _, sid in uses}
    known = {r.id: r for r in registry.records() if r.id in wanted}
    records = sorted(known.values(), key=lambda r: r.id)
    reasons = dict(zip((r.id for r in records), registry.rules.exclusion_reasons(records, evaluation, registry.query_signature)))
    report.sources_checked = len(wanted)
    for row_id, sid in uses:
        reason = reasons[sid] if sid in known else "not in the registry, so it cannot be checked"
        if reason is not None:
            report.violations.append(Violation(row_id, sid, reason))
    return report
