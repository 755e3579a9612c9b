"""``daad eval``: train the detector on each generated dataset and score it on an evaluation dataset."""

from __future__ import annotations

import json
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
        "--eval", help="The evaluation dataset to score on: kolektorsdd, or mvtec-layout: one category folder of your "
        "own in MVTec AD's layout (train/good, test/<defect>, ground_truth/<defect>/<stem>_mask.png).")],
    root: RootOption = None,
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
    inception: Annotated[Path | None, typer.Option("--inception", help="Local TorchScript FID Inception weights; FID/KID 'not computed' without.")] = None,
) -> None:
    """Score generators by the detector they train (CAI paper §4.1, 'Utility in IAD')."""
    from daad.evaluation.data import EVALUATION_SETS, load_evaluation_set
    from daad.registry.roots import Roots

    check_values([eval_], EVALUATION_SETS, "--eval")
    from daad.evaluation.fid import load_inception
    from daad.evaluation.harness import evaluate_generated
    from daad.evaluation.report import write_report
    from daad.evaluation.train import TrainConfig

    try:
        config = TrainConfig(size=size, steps=steps, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed,
                             selection=selection, eval_every=eval_every, base_width=width, device=device, progress=output.progress)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    if output.quiet or output.json:
        import datasets

        datasets.disable_progress_bars()
    evaluation = load_evaluation_set(eval_, Roots(root_options(root))[eval_])
    extractor = load_inception(inception) if inception else None
    results = evaluate_generated(evaluation, generated, config, extractor=extractor)
    write_report(out, evaluation, config, results)
    if output.json:
        print_json(json.loads((out / "report.json").read_text(encoding="utf-8")))
        return
    typer.echo((out / "report.md").read_text(encoding="utf-8"))
    console.print(f"report: {out}")
