"""``daad eval``: train the detector on each generated dataset and score it on an evaluation dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from daad.cli.app import app, console, output, print_json, root_options
from daad.cli.options import RootOption, check_values


@app.command("eval")
def evaluate(
    generated: Annotated[list[Path], typer.Option("--generated", help="A generated dataset folder (repeatable).")],
    out: Annotated[Path, typer.Option("--out", help="Report folder (report.json, report.md, overlays/, curves.png).")],
    eval_: Annotated[str, typer.Option(
        "--eval", help="The evaluation dataset to score on: a published dataset as its loader reads it (mvtec_ad, visa, "
        "ksdd2, btad, mpdd, mvtec_loco, mtd, kolektorsdd, dagm2007, bsdata), or a folder of your own: mvtec-layout (one "
        "category: train/good, test/<defect>, ground_truth/<defect>/<stem>_mask.png) or anomalib-folder (normal/, "
        "abnormal/, mask/); its files from --root NAME=PATH.")],
    root: RootOption = None,
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
) -> None:
    """Score generators by the detector they train (CAI paper §4.1, 'Utility in IAD')."""
    from daad.evaluation.sets import EVALUATION_SETS, evaluation_sets
    from daad.registry.roots import Roots

    check_values([eval_], EVALUATION_SETS, "--eval")
    from daad.evaluation.fid import load_inception
    from daad.evaluation.harness import evaluate_generated
    from daad.evaluation.report import write_report, write_summary
    from daad.evaluation.train import TrainConfig

    try:
        config = TrainConfig(size=size, steps=steps, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                             selection=selection, eval_every=eval_every, base_width=width, device=device,
                             progress=output.progress, precision=precision)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if output.quiet or output.json:
        import datasets

        datasets.disable_progress_bars()
    extractor = load_inception(inception) if inception else None
    contents = []
    for evaluation in evaluation_sets(eval_, Roots(root_options(root))[eval_], category):
        folder = out / evaluation.name.partition("/")[2] if "/" in evaluation.name else out
        results = evaluate_generated(evaluation, generated, config, extractor=extractor, keep_maps=False)
        contents.append(write_report(folder, evaluation, config, results))
        if not output.json:
            typer.echo((folder / "report.md").read_text(encoding="utf-8"))
    summary = None
    if len(contents) > 1 or "/" in contents[0]["evaluation"]["dataset"]:
        summary = write_summary(out, eval_, contents)
        if not output.json:
            typer.echo((out / "summary.md").read_text(encoding="utf-8"))
    if output.json:
        print_json(summary if summary is not None else contents[0])
        return
    console.print(f"report: {out}")
