"""The CAI paper's utility protocol (§4.1) as runs, and a sweep of them that fills one results table.

One run = (generator, evaluation dataset, category): the generator makes ``per_target``
pseudo-anomalies (10 in the paper) for each normal *training* image of that category, drawing
real anomalies only from the registry view that is leak-free for the dataset; the detector is
trained from the same seed with the same budget as every other run and scored on the
category's test images (pixel AUROC, pixel AP, PRO, image AUROC, F1-max, per defect type).

A :class:`RunSpec` is a plain, picklable record and :func:`execute` a module-level function, so
an executor may run them anywhere (:func:`local_executor` runs them here, one after the other;
another executor, e.g. a Ray task runner, only has to call ``execute(spec)`` and yield the rows).
:func:`sweep` skips the runs already in ``results.csv`` and rewrites the table (atomically)
after each run that finishes, so an interrupted sweep resumes where it stopped.
"""

from __future__ import annotations

import csv
import io
import time
import traceback
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from daad.atomic import write_atomically
from daad.evaluation.train import TrainConfig

GENERATORS: dict[str, tuple[str, dict]] = {
    "cai-normal": ("cai", {"mode": "normal", "mask_rule": "pattern"}),
    "cai-mixed": ("cai", {"mode": "mixed", "mask_rule": "pattern"}),
    "cai-normal-paper": ("cai", {"mode": "normal", "mask_rule": "paper"}),
    "cai-mixed-paper": ("cai", {"mode": "mixed", "mask_rule": "paper"}),
    "cai-normal-t30": ("cai", {"mode": "normal", "mask_rule": "pattern", "threshold": 30}),
    "cai-mixed-t30": ("cai", {"mode": "mixed", "mask_rule": "pattern", "threshold": 30}),
    "cutpaste": ("cutpaste", {}),
    "cutpaste-scar": ("cutpaste", {"variant": "scar"}),
    "nsa-normal": ("nsa", {"mode": "normal"}),
    "nsa-mixed": ("nsa", {"mode": "mixed"}),
    "draem": ("draem", {}),
}
"""Generator names a run accepts -> (kind, configuration); ``-paper`` is CAI with the paper's Eq. 4 mask rule,
``-t30`` CAI whose mask keeps only pixels changed by more than 30 grey levels (not 7), so that faint injections
are redrawn (``benchmarks/cai_diagnosis.py``)."""
PAPER_GENERATORS = ("cai-normal", "cai-mixed", "cutpaste", "nsa-normal", "draem")
NEEDS_VIEW = ("cai", "draem")
METRICS = ("pixel_auroc", "pixel_ap", "pro", "pixel_f1_max", "image_auroc")
COLUMNS = ("dataset", "category", "generator", *METRICS, "selection", "rows", "steps", "best_step",
           "per_target", "size", "width", "seed", "precision", "wall_s", "report")
RESULTS = "results.csv"


@dataclass(frozen=True)
class RunSpec:
    """Everything one run needs, as plain values (picklable, comparable)."""

    generator: str
    dataset: str
    root: str
    category: str
    """Empty for a dataset that is one set."""
    out: str
    """The sweep's folder; the run writes under ``runs/<key>/``."""
    train: TrainConfig = field(default_factory=TrainConfig)
    per_target: int = 10
    seed: int = 0
    manifests: str | None = None
    roots: tuple[tuple[str, str], ...] = ()
    """Where the registry's origins live (the sources of CAI's and DRAEM's real anomalies)."""
    foreground: str = "auto"
    rembg_model: str | None = None
    workers: int = 1
    """Generator processes."""

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.category or '-'}/{self.generator}"

    @property
    def folder(self) -> Path:
        return Path(self.out) / "runs" / self.dataset / (self.category or "-") / self.generator


def make_generator(name: str, per_target: int, foreground=None, view=None):
    """The generator called ``name`` in :data:`GENERATORS`, making ``per_target`` rows per target; CAI and
    DRAEM take their real anomalies (patterns, textures) from the registry ``view``."""
    from daad.synthesis.baselines.cutpaste import CutPaste, CutPasteConfig
    from daad.synthesis.baselines.draem import DRAEM, DRAEMConfig
    from daad.synthesis.baselines.nsa import NSA, NSAConfig
    from daad.synthesis.cai import CAI, CAIConfig, PatternBank

    if name not in GENERATORS:
        raise ValueError(f"unknown generator {name!r}; known: {', '.join(GENERATORS)}")
    kind, params = GENERATORS[name]
    if kind == "cai":
        return CAI(CAIConfig(per_target=per_target, **params), foreground, PatternBank.from_view(view) if view is not None else None)
    if kind == "nsa":
        return NSA(NSAConfig(per_target=per_target, **params), foreground)
    if kind == "cutpaste":
        return CutPaste(CutPasteConfig(per_target=per_target, **params))
    draem = DRAEM(DRAEMConfig(per_target=per_target, **params))
    if view is not None:
        draem.prepare(view)
    return draem


def _view(spec: RunSpec):
    """The registry view leak-free for the run's dataset, limited to the origins whose files are here."""
    from daad.registry.registry import Registry
    from daad.registry.roots import Roots

    from daad.evaluation.sets import USER_SETS

    registry = Registry(spec.manifests, Roots(dict(spec.roots)))
    evaluation = "none" if spec.dataset in USER_SETS else spec.dataset  # a published dataset without a rule fails here
    present = [p.stem for p in registry.manifests()
               if registry.roots.get(p.stem) is not None or all(r.image.path is None for r in registry.records([p.stem]))]
    return registry.view(evaluation=evaluation, origins=present)


def generate(spec: RunSpec, evaluation) -> Path:
    """The run's generated dataset (made from the category's training normals), reused when complete."""
    from daad.evaluation.data import as_rgb
    from daad.synthesis.base import Target
    from daad.synthesis.foreground import ForegroundExtractor
    from daad.synthesis.output import PARAMS_FILE, write_generated
    from daad.synthesis.parallel import generate_encoded
    from daad.synthesis.targets import resize

    dest = spec.folder / "generated"
    if (dest / PARAMS_FILE).is_file():  # written last, atomically: the folder is complete
        return dest
    kind = GENERATORS[spec.generator][0]
    foreground = ForegroundExtractor(spec.foreground, spec.rembg_model) if kind in ("cai", "nsa") else None
    generator = make_generator(spec.generator, spec.per_target, foreground, _view(spec) if kind in NEEDS_VIEW else None)
    targets = [Target(s.id, resize(as_rgb(s.image), spec.train.size), "unknown") for s in evaluation.train_normals]
    write_generated(
        dest, generate_encoded(generator, targets, spec.seed, spec.workers), generator=spec.generator,
        params=generator.params() | {"size": spec.train.size, "per_target": spec.per_target},
        seed=spec.seed, evaluation=spec.dataset, progress=spec.train.progress, total=len(targets) * spec.per_target,
    )
    return dest


def run(spec: RunSpec) -> dict:
    """Generate, train and score one run; its report goes to ``<folder>/report``; returns its table row."""
    from daad.evaluation.harness import evaluate_generated
    from daad.evaluation.report import write_report
    from daad.evaluation.sets import load_evaluation_set

    start = time.perf_counter()
    evaluation = load_evaluation_set(spec.dataset, Path(spec.root), spec.category or None)
    generated = generate(spec, evaluation)
    (result,) = evaluate_generated(evaluation, [generated], spec.train, keep_maps=False)
    write_report(spec.folder / "report", evaluation, spec.train, [result])
    metrics = result.metrics.as_dict()
    return {
        "key": spec.key, "dataset": spec.dataset, "category": spec.category, "generator": spec.generator,
        **{k: round(metrics[k], 6) for k in METRICS}, "selection": spec.train.selection, "rows": result.rows,
        "steps": result.steps, "best_step": result.best_step, "per_target": spec.per_target, "size": spec.train.size,
        "width": spec.train.base_width, "seed": spec.train.seed, "precision": spec.train.precision,
        "wall_s": round(time.perf_counter() - start, 1), "report": str(spec.folder / "report"),
    }


def execute(spec: RunSpec) -> dict:
    """:func:`run`, with a failure returned as a row holding ``error`` (the sweep reports it and does not record it)."""
    try:
        return run(spec)
    except Exception as exc:  # noqa: BLE001 - one failed run must not lose the others
        return {"key": spec.key, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}


Executor = Callable[[Callable[[RunSpec], dict], Sequence[RunSpec]], Iterable[dict]]
"""Runs ``function(spec)`` for every spec, anywhere, and yields each row as its run finishes (any order)."""


def local_executor(function: Callable[[RunSpec], dict], specs: Sequence[RunSpec]) -> Iterator[dict]:
    """Every run in this process, one after the other (the detector uses every core by itself)."""
    for spec in specs:
        yield function(spec)


@dataclass
class ResultsTable:
    """``results.csv`` (one row per finished run) and ``results.md`` (the same, with each dataset's mean)."""

    folder: Path
    rows: dict[str, dict] = field(default_factory=dict)

    @classmethod
    def open(cls, folder: Path) -> ResultsTable:
        table = cls(Path(folder))
        path = table.folder / RESULTS
        if path.is_file():
            with open(path, newline="", encoding="utf-8") as f:
                table.rows = {f"{r['dataset']}/{r['category'] or '-'}/{r['generator']}": r for r in csv.DictReader(f)}
        return table

    def __contains__(self, key: str) -> bool:
        return key in self.rows

    def add(self, row: dict) -> None:
        self.rows[row["key"]] = {c: row.get(c, "") for c in COLUMNS}
        self.folder.mkdir(parents=True, exist_ok=True)
        ordered = [self.rows[k] for k in sorted(self.rows)]
        text = io.StringIO()
        writer = csv.DictWriter(text, COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(ordered)
        write_atomically(self.folder / RESULTS, [text.getvalue()])
        write_atomically(self.folder / "results.md", [markdown(ordered)])


def markdown(rows: Sequence[dict]) -> str:
    """Every run, and per dataset and generator the mean over its categories."""
    head = "| dataset | category | generator | " + " | ".join(METRICS) + " | selection | best step | wall s |"
    lines = ["# Utility of pseudo-anomalies (CAI paper §4.1 protocol)", "", head, "|---" * (len(METRICS) + 6) + "|"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["dataset"], r["generator"]), []).append(r)
        lines.append(f"| {r['dataset']} | {r['category'] or '-'} | {r['generator']} | "
                     + " | ".join(_cell(r[m]) for m in METRICS) + f" | {r['selection']} | {r['best_step']}/{r['steps']} | {r['wall_s']} |")
    if any(r["selection"] == "test-best" for r in rows):
        lines += ["", "test-best: the checkpoint was chosen on the test set itself (the paper's protocol): optimistic."]
    lines += ["", "Mean over categories:", "", "| dataset | generator | categories | " + " | ".join(METRICS) + " |",
              "|---" * (len(METRICS) + 3) + "|"]
    for (dataset, generator), group in sorted(groups.items()):
        means = []
        for m in METRICS:
            known = [float(r[m]) for r in group if r[m] not in ("", None)]
            means.append(_cell(sum(known) / len(known)) if known else "n/a")
        lines.append(f"| {dataset} | {generator} | {len(group)} | " + " | ".join(means) + " |")
    return "\n".join(lines) + "\n"


def _cell(value) -> str:
    return "n/a" if value in ("", None) else f"{float(value):.3f}"


def sweep(specs: Sequence[RunSpec], out: Path, executor: Executor = local_executor,
          on_row: Callable[[dict], None] | None = None) -> tuple[ResultsTable, list[dict]]:
    """Run every spec not already in ``out/results.csv`` through ``executor``, adding each finished run
    to the table as it arrives; returns the table and the failed runs' rows."""
    table = ResultsTable.open(out)
    keys = [s.key for s in specs]
    if len(set(keys)) != len(keys):
        raise ValueError("two runs of the sweep have the same dataset, category and generator")
    todo = [s for s in specs if s.key not in table]
    failed = []
    for row in executor(execute, todo):
        if "error" in row:
            failed.append(row)
        else:
            table.add(row)
        if on_row is not None:
            on_row(row)
    return table, failed
