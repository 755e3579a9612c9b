"""``daad eval``: train the detector on each generated dataset and score it on an evaluation dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from daad.cli.app import QuietOption, app, console


@app.command("eval")
def evaluate(
    generated: Annotated[list[Path], typer.Option("--generated", help="A generated dataset folder (repeatable).")],
    root: Annotated[Path, typer.Option("--root", help="Where the evaluation dataset lives, as its authors publish it.")],
    out: Annotated[Path, typer.Option("--out", help="Report folder (report.json, report.md, overlays/, curves.png).")],
    eval_dataset: Annotated[str, typer.Option(
        "--eval-dataset", help="A published dataset as its loader reads it (mvtec_ad, visa, ksdd2, btad, mpdd, mvtec_loco, "
        "mtd, kolektorsdd, dagm2007, bsdata), or a folder of your own: mvtec-layout (one category: train/good, "
        "test/<defect>, ground_truth/<defect>/<stem>_mask.png) or anomalib-folder (normal/, abnormal/, mask/).")] = "kolektorsdd",
    category: Annotated[list[str] | None, typer.Option(
        "--category", help="A category of the dataset (repeatable); default: every category, each scored on its own.")] = None,
    size: Annotated[int, typer.Option(help="Square resolution of the detector (multiple of 32).")] = 256,
    steps: Annotated[int, typer.Option(help="Training steps per generator.")] = 1000,
    epochs: Annotated[int | None, typer.Option(help="Passes over the training set (overrides --steps).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 8,
    lr: Annotated[float, typer.Option(help="Adam learning rate.")] = 1e-4,
    seed: Annotated[int, typer.Option(help="Seed of the detector's initialisation and batches.")] = 0,
    selection: Annotated[str, typer.Option(help="Checkpoint selection: 'val' (held-out synthetic rows) or 'test-best' (the paper's optimistic protocol).")] = "val",
    eval_every: Annotated[int, typer.Option("--eval-every", help="Steps between checkpoint-selection checks.")] = 100,
    width: Annotated[int, typer.Option(help="UNet base width (64 in the papers).")] = 64,
    device: Annotated[str, typer.Option(help="'auto', 'cpu' or 'cuda'.")] = "auto",
    precision: Annotated[str, typer.Option("--precision", help="bf16 (autocast + channels_last), fp32, or auto: "
                                           "bf16 where the device computes it natively.")] = "auto",
    inception: Annotated[Path | None, typer.Option("--inception", help="Local TorchScript FID Inception weights; FID/KID 'not computed' without.")] = None,
    quiet: QuietOption = False,
) -> None:
    """Score generators by the detector they train (CAI paper §4.1, 'Utility in IAD')."""
    from daad.evaluation.sets import evaluation_sets
    from daad.evaluation.fid import load_inception
    from daad.evaluation.harness import evaluate_generated
    from daad.evaluation.report import write_report, write_summary
    from daad.evaluation.train import TrainConfig

    try:
        config = TrainConfig(size=size, steps=steps, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                             selection=selection, eval_every=eval_every, base_width=width, device=device, progress=not quiet,
                             precision=precision)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if quiet:
        import datasets

        datasets.disable_progress_bars()
    extractor = load_inception(inception) if inception else None
    contents = []
    for evaluation in evaluation_sets(eval_dataset, root, category):
        folder = out / evaluation.name.partition("/")[2] if "/" in evaluation.name else out
        results = evaluate_generated(evaluation, generated, config, extractor=extractor, keep_maps=False)
        contents.append(write_report(folder, evaluation, config, results))
        typer.echo((folder / "report.md").read_text(encoding="utf-8"))
    if len(contents) > 1 or "/" in contents[0]["evaluation"]["dataset"]:
        write_summary(out, eval_dataset, contents)
        typer.echo((out / "summary.md").read_text(encoding="utf-8"))
    console.print(f"report: {out}")
