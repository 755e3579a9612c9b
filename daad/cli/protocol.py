"""``daad protocol``: the CAI paper's utility protocol over generators x datasets x categories, one results table."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from daad.cli.app import app, console, output
from daad.cli.options import (
    ForegroundOption, ManifestsOption, PerTargetOption, RayOption, RembgOption, RootOption, SeedOption, check_values,
)


@app.command("protocol")
def protocol(
    eval_: Annotated[list[str], typer.Option("--eval", help="Evaluation dataset (repeatable): a published one "
                                             "(mvtec_ad, visa, ksdd2, btad, mpdd, mtd, kolektorsdd, dagm2007, bsdata ...) "
                                             "or mvtec-layout / anomalib-folder (a folder of your own).")],
    out: Annotated[Path, typer.Option("--out", help="Sweep folder: results.csv, results.md, runs/<dataset>/<category>/<generator>/.")],
    root: RootOption = None,
    generator: Annotated[list[str] | None, typer.Option(
        "--generator", help="Generator (repeatable): cai-normal, cai-mixed, cai-normal-paper, cai-mixed-paper (Eq. 4 "
        "mask), cai-normal-t30, cai-mixed-t30 (mask threshold 30), cutpaste, cutpaste-scar, nsa-normal, nsa-mixed, draem. Default: the paper's five.")] = None,
    category: Annotated[list[str] | None, typer.Option(
        "--category", help="Only these categories (repeatable; DATASET/CATEGORY when several --eval).")] = None,
    per_target: PerTargetOption = 10,
    size: Annotated[int, typer.Option("--size", help="Generation and detector resolution (multiple of 32).")] = 256,
    epochs: Annotated[int | None, typer.Option(help="Passes over each run's training set (the paper: 200).")] = 200,
    steps: Annotated[int, typer.Option(help="Training steps, when --epochs is 0.")] = 1000,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 8,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-4,
    width: Annotated[int, typer.Option(help="UNet base width (the papers: 64).")] = 64,
    selection: Annotated[str, typer.Option(help="val (held-out synthetic rows) or test-best (the paper's best "
                                           "checkpoint on the test set: optimistic, labelled so).")] = "val",
    eval_every: Annotated[int, typer.Option("--eval-every", help="Steps between checkpoint-selection checks.")] = 100,
    seed: SeedOption = 0,
    device: Annotated[str, typer.Option(help="'auto', 'cpu' or 'cuda'.")] = "auto",
    precision: Annotated[str, typer.Option("--precision", help="bf16 (autocast + channels_last), fp32, or auto: "
                                           "bf16 where the device computes it natively.")] = "auto",
    workers: Annotated[int, typer.Option("--workers", help="Generator processes per run.")] = 1,
    foreground: ForegroundOption = "auto",
    rembg_model: RembgOption = None,
    manifests: ManifestsOption = None,
    ray: RayOption = None,
) -> None:
    """Generate, train and score every run not yet in OUT/results.csv (an interrupted sweep resumes)."""
    from daad.evaluation.protocol import GENERATORS, PAPER_GENERATORS, ResultsTable, RunSpec, sweep
    from daad.evaluation.sets import EVALUATION_SETS, USER_SETS, index
    from daad.evaluation.train import TrainConfig
    from daad.registry.roots import Roots, parse_root_options

    try:
        roots = parse_root_options(root)
    except ValueError as exc:
        raise typer.BadParameter(str(exc), param_hint="--root") from None
    names = generator or list(PAPER_GENERATORS)
    check_values(names, GENERATORS, "--generator")
    check_values(eval_, EVALUATION_SETS, "--eval")
    plain = [c for c in category or () if "/" not in c]
    if plain and len(eval_) > 1:
        raise typer.BadParameter("with several --eval, name categories as DATASET/CATEGORY", param_hint="--category")
    try:
        config = TrainConfig(size=size, steps=steps, epochs=epochs or None, batch_size=batch_size, lr=lr, seed=seed,
                             selection=selection, eval_every=eval_every, base_width=width, device=device, progress=output.progress,
                             precision=precision)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None

    specs = []
    for name in eval_:
        dataset_root = Roots(roots)[name]
        if name in USER_SETS:
            categories = [""]
        else:
            wanted = plain + [c.partition("/")[2] for c in category or () if c.partition("/")[0] == name]
            known = index(name, dataset_root).categories()
            missing = sorted(set(wanted) - set(known))
            if missing:
                raise typer.BadParameter(f"{name} has no {', '.join(missing)}; its categories: {', '.join(known)}",
                                         param_hint="--category")
            categories = wanted or known
        specs += [RunSpec(g, name, str(dataset_root), c, str(out), config, per_target, seed,
                          str(manifests) if manifests else None, tuple((k, str(v)) for k, v in roots.items()),
                          foreground, str(rembg_model) if rembg_model else None, workers)
                  for c in categories for g in names]

    def report(row: dict) -> None:
        if "error" in row:
            console.print(f"[red]{row['key']}: failed: {row['error']}[/]")
        else:
            console.print(f"{row['key']}: pixel AP {float(row['pixel_ap']):.3f}, AUROC {float(row['pixel_auroc']):.3f}, "
                          f"PRO {float(row['pro']):.3f} ({row['wall_s']} s)")

    done = ResultsTable.open(out)
    already = sum(s.key in done for s in specs)
    if ray is None:
        table, failed = sweep(specs, out, on_row=report)
    else:  # one Ray task per run; rows land in the same table as they finish
        from daad.distributed.cluster import connected
        from daad.distributed.runs import ray_executor

        with connected(ray) as session:
            table, failed = sweep(specs, out, executor=ray_executor(session, progress=output.progress), on_row=report)
    console.print(f"ran {len(specs) - already - len(failed)}, already done {already}, failed {len(failed)}; "
                  f"{len(table.rows)} rows in {out / 'results.csv'}")
    if table.rows:
        typer.echo((out / "results.md").read_text(encoding="utf-8"))
    if failed:
        raise typer.Exit(1)
