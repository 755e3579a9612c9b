"""Generating in several worker processes, with the bytes one process would write.

Each target's rows depend only on the targets, its index and the seed
(:class:`~daad.synthesis.base.PerTargetGenerator`), so workers take chunks of target
indices, synthesise and PNG-encode their rows, and send them back with their report
(retries, give-ups); the parent receives the chunks in index order, adds the reports to
its generator's and yields the rows (:func:`daad.processes.process_map`).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from daad.processes import process_map, start_server
from daad.synthesis.base import GenerationReport, PerTargetGenerator, Target, per_target_rows
from daad.synthesis.output import EncodedRow, encode_row

CHUNK = 4
"""Targets per task: small enough to balance the workers, large enough to amortise the hand-off."""


def generate_encoded(
    generator: PerTargetGenerator, targets: Sequence[Target], seed: int, workers: int = 1
) -> Iterator[EncodedRow]:
    """The encoded rows of every target, in target order, from ``workers`` processes."""
    if workers <= 1 or len(targets) <= CHUNK:
        yield from map(encode_row, per_target_rows(generator, targets, seed))
        return
    start_server((__name__, type(generator).__module__))
    chunks = [range(i, min(i + CHUNK, len(targets))) for i in range(0, len(targets), CHUNK)]
    for rows, report in process_map(chunk_rows, (generator, targets, seed), chunks, workers):
        generator.report.add(report)
        yield from rows


def chunk_rows(job: tuple[PerTargetGenerator, Sequence[Target], int], indices: range) -> tuple[list[EncodedRow], GenerationReport]:
    """The encoded rows of ``targets[indices]`` and the report of making them (in a worker: a
    process of the local pool, or a Ray task, :mod:`daad.distributed.synthesis`)."""
    generator, targets, seed = job
    generator.report = GenerationReport()
    rows = [encode_row(row) for index in indices for row in generator.rows_for(targets, index, seed)]
    return rows, generator.report
