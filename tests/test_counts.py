"""One result-summary type: build, validate and the generators report accepted / rejected /
skipped the same way, and add up the same way across workers."""

from __future__ import annotations

from collections import Counter

from daad.counts import Counts
from daad.dataset.summary import BuildSummary
from daad.registry.validate import ValidationReport
from daad.synthesis.base import GenerationReport


def test_every_batch_report_is_counts_and_adds_up_alike():
    for kind in (BuildSummary, ValidationReport, GenerationReport):
        total, part = kind(), kind()
        part.accepted, part.rejected["bad_mask"], part.skipped["duplicate"] = 3, 2, 1
        total.add(part)
        total.add(part)
        assert isinstance(total, Counts)
        assert (total.accepted, total.rejected, total.skipped) == (6, Counter(bad_mask=4), Counter(duplicate=2))
        assert not total.ok and "rejected 4 (bad_mask 4)" in Counts.line(total)


def test_generation_names_are_the_shared_counts():
    report = GenerationReport()
    report.rows += 2
    report.failures["tiny_mask"] += 1
    report.gave_up += 1
    report.retries += 1
    assert (report.accepted, report.rejected, report.skipped) == (2, Counter(tiny_mask=1), Counter(gave_up=1))
    other = GenerationReport(quota_shifted=2)
    other.rows = 1
    report.add(other)
    assert (report.rows, report.gave_up, report.retries, report.quota_shifted) == (3, 1, 1, 2)
    assert report.lines(max_tries=5) == ["1 retried draws (tiny_mask: 1)", "1 outputs given up after 5 tries",
                                         "2 outputs moved to a smaller scale (no pattern large enough)"]
