"""CDM on a tiny random SD model, trained on real CAI output made from the shared data.

The CAI data: SD-saliency-900 scratches and inclusions injected by the real CAI generator
into KolektorSDD defect-free commutator images (downscaled). Training and sampling run
the real diffusers/transformers code for a few steps at 32 px.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from daad.loaders.kolektorsdd import iter_normals
from daad.registry import Registry
from daad.registry.roots import Roots
from daad.synthesis.base import Target
from daad.synthesis.cai import CAI, CAIConfig
from daad.synthesis.cdm.data import foreground_extractor
from daad.synthesis.cdm.embeddings import (
    SPATIAL_TOKEN,
    VECTORS_PER_TOKEN,
    add_tokens,
    class_token,
    embedding_file,
    mask_token,
    spelled,
    token_names,
)
from daad.synthesis.cdm.errors import CDMCheckpointError
from daad.synthesis.cdm.maskgen import MaskBank, mask_from_image
from daad.synthesis.cdm.sample import CDM, SampleConfig, input_licences
from daad.synthesis.cdm.train import CHECKPOINTS_DIR, EMBEDDINGS_DIR, TrainConfig, learned_tokens, train
from daad.synthesis.diffusion import load_base
from daad.synthesis.foreground import ForegroundExtractor, classical_mask
from daad.synthesis.output import generator_info, read_generated, write_generated
from tests.conftest import REPO, SD_ROOT, SHARED_DATA
from tests.helpers.tiny_sd import build_tiny_sd

pytestmark = pytest.mark.usefixtures("one_torch_thread")


KOLEKTOR = SHARED_DATA / "kolektorsdd-yolo"
TARGET_SIZE = (48, 96)
"""(width, height): KolektorSDD's tall commutator images, downscaled."""


def kolektor_targets(n: int, skip: int = 0) -> list[Target]:
    targets = []
    for normal in list(iter_normals(KOLEKTOR))[skip : skip + n]:
        grey = cv2.imread(str(normal.path), cv2.IMREAD_GRAYSCALE)
        small = cv2.resize(grey, TARGET_SIZE, interpolation=cv2.INTER_AREA)
        targets.append(Target(normal.id, np.repeat(small[..., None], 3, axis=2), "CC-BY-NC-SA-4.0"))
    return targets


def make_cai_dataset(dest: Path, per_class: int = 3, n_targets: int = 4) -> Path:
    """Real CAI output: a few SD-saliency-900 scratches and inclusions on KolektorSDD normals."""
    manifests = dest / "manifests"
    manifests.mkdir(parents=True)
    for name in ("sources.toml", "exclusions.toml"):
        shutil.copy(REPO / "manifests" / name, manifests / name)
    lines = (REPO / "manifests" / "sd_saliency_900.jsonl").read_text(encoding="utf-8").splitlines()
    keep = [x for x in lines if '"native_label": "Sc"' in x][:per_class]
    keep += [x for x in lines if '"native_label": "In"' in x][:per_class]
    (manifests / "sd_saliency_900.jsonl").write_text("\n".join(sorted(keep)) + "\n", encoding="utf-8")
    view = Registry(manifests, Roots({"sd_saliency_900": SD_ROOT})).view(evaluation="kolektorsdd")
    cai = CAI(CAIConfig(per_target=4), ForegroundExtractor("classical"))
    targets = kolektor_targets(n_targets)
    licences = {t.id: t.licence for t in targets} | {r.id: r.licence for r in view}
    write_generated(
        dest / "cai", cai.generate(targets, view, seed=0), generator=cai.name, params=cai.params(), seed=0,
        evaluation="kolektorsdd", input_licences=licences, progress=False,
    )
    return dest / "cai"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cdm")
    make_cai_dataset(root)
    build_tiny_sd(root / "sd")
    return root


def config(work: Path, output: Path, steps: int = 4, **overrides) -> TrainConfig:
    values = dict(
        data=work / "cai", base_model=str(work / "sd"), output=output, resolution=32, steps=steps,
        batch_size=2, checkpoint_every=2, learning_rate=5e-2, foreground="classical", seed=3,
    )
    return TrainConfig(**(values | overrides))


@pytest.fixture(scope="module")
def trained(work):
    return train(config(work, work / "ckpt"), progress=False)


def sampler(checkpoint: Path, **overrides) -> CDM:
    values = dict(checkpoint=checkpoint, per_target=3, steps=3, batch_size=4, foreground="classical", dilate=2)
    return CDM(SampleConfig(**(values | overrides)))


def test_training_changes_only_the_class_tokens(work, trained):
    assert trained.tokens.tokens == ("<scratch>", "<scratch-mask>", "<impurity>", "<impurity-mask>")
    assert len(trained.losses) == 4 and all(np.isfinite(trained.losses))
    fresh = load_base(str(work / "sd"))
    for name in ("unet", "vae", "text_encoder"):
        after = getattr(trained.base, name).state_dict()
        before = getattr(fresh, name).state_dict()
        # the vocabulary sits inside ClassTokenEmbedding beside the trainable class rows
        frozen = {k.replace(".vocabulary.", "."): v for k, v in after.items() if not k.endswith("token_embedding.rows")}
        assert frozen.keys() == before.keys(), name
        changed = [k for k in before if not torch.equal(before[k], frozen[k])]
        assert changed == [], f"{name}: frozen weights changed: {changed}"
    trainable = [n for m in ("unet", "vae", "text_encoder") for n, p in getattr(trained.base, m).named_parameters() if p.requires_grad]
    assert trainable == ["embeddings.token_embedding.rows"]
    initial = add_tokens(fresh.tokenizer, fresh.text_encoder, learned_tokens(("scratch", "impurity"))).rows
    assert trained.tokens.rows.shape == (4 * VECTORS_PER_TOKEN, initial.shape[1])  # anomaly + mask token per class
    moved = (initial - trained.tokens.rows.detach()).abs().sum(dim=1).view(4, VECTORS_PER_TOKEN)
    assert (moved > 0).all(), "training did not move every anomaly and mask vector"
    assert trained.spatial.out.weight.abs().sum() > 0, "the spatial encoder did not train"


def test_learned_embeddings_reload_bit_identical_and_load_into_diffusers(work, trained):
    from diffusers import StableDiffusionPipeline

    first = sampler(trained.output)
    model = first.model()
    assert torch.equal(model.tokens.rows, trained.tokens.rows.detach())
    saved, live = model.spatial.state_dict(), trained.spatial.state_dict()
    assert saved.keys() == live.keys() and all(torch.equal(saved[k], live[k]) for k in saved)
    assert first.fingerprint == trained.fingerprint
    # the anomaly tokens are plain diffusers multi-vector textual inversion files
    pipe = StableDiffusionPipeline.from_pretrained(str(work / "sd"), safety_checker=None, requires_safety_checker=False)
    for token in (class_token("scratch"), mask_token("impurity")):
        file = embedding_file(trained.output / EMBEDDINGS_DIR, token)
        pipe.load_textual_inversion(str(file), token=token)
        ids = pipe.tokenizer.convert_tokens_to_ids(token_names(token))
        assert torch.equal(pipe.text_encoder.get_input_embeddings().weight[ids], load_file(str(file))[token])
        assert pipe.maybe_convert_prompt(f"a photo of {token}", pipe.tokenizer) == f"a photo of {spelled(token)}"
    targets = kolektor_targets(2, skip=10)
    a = list(first.generate(targets, None, seed=7))
    assert {r.details["mask_from"] for r in a} <= {"learnt", "bank"}
    b = list(sampler(trained.output).generate(targets, None, seed=7))
    c = list(sampler(trained.output).generate(targets, None, seed=8))
    assert all(np.array_equal(x.image, y.image) and np.array_equal(x.mask, y.mask) for x, y in zip(a, b, strict=True))
    assert any(not np.array_equal(x.image, y.image) for x, y in zip(a, c, strict=True))


def test_sampled_rows_stay_inside_the_foreground_and_keep_the_target_outside(work, trained, tmp_path):
    targets = kolektor_targets(3, skip=20)
    cdm = sampler(trained.output, dilate=2)
    rows = list(cdm.generate(targets, None, seed=1))
    assert len(rows) == len(targets) * 3
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    by_id = {t.id: t for t in targets}
    for row in rows:
        target = by_id[row.target_id]
        assert set(np.unique(row.mask)) <= {0, 1} and row.mask.any()
        fg = classical_mask(target.image)
        assert not (row.mask & (1 - fg)).any(), "mask leaves the foreground"
        outside = cv2.dilate(row.mask, kernel) == 0
        assert np.array_equal(row.image[outside], target.image[outside])
        assert row.anomaly_class in ("scratch", "impurity") and row.details["mask_from"] in ("learnt", "bank")
        assert row.details["checkpoint"] == trained.fingerprint
        assert set(row.source_ids) and all(s.startswith("sd_saliency_900/") for s in row.source_ids)
    assert [r.target_id for r in rows] == [t.id for t in targets for _ in range(3)]

    out = tmp_path / "cdm-out"
    write_generated(
        out, rows, generator=cdm.name, params=cdm.params(), seed=1, evaluation="kolektorsdd",
        input_licences=input_licences(cdm, targets), progress=False,
    )
    back = list(read_generated(out))
    assert len(back) == len(rows) and {r["generator"] for r in back} == {"cdm"}
    info = generator_info(out)
    assert info["params"]["checkpoint_fingerprint"] == trained.fingerprint
    assert info["params"]["trained_on"]["licences"] == ["CC-BY-NC-SA-4.0", "LicenseRef-SD-saliency-900-research"]
    assert "LicenseRef-SD-saliency-900-research" in (out / "README.md").read_text(encoding="utf-8")


def test_resume_continues_the_same_run(work, trained):
    output = work / "resumed"
    first = train(config(work, output, steps=2), progress=False)
    assert (output / CHECKPOINTS_DIR / "step-0000002").is_dir()
    with pytest.raises(CDMCheckpointError):
        train(config(work, output, steps=4), progress=False)  # would overwrite the run silently
    resumed = train(config(work, output, steps=4, resume=True), progress=False)
    assert first.losses == trained.losses[:2]
    assert resumed.losses == trained.losses
    assert torch.equal(resumed.tokens.rows, trained.tokens.rows)
    assert torch.equal(resumed.spatial.out.weight, trained.spatial.out.weight)
    assert resumed.fingerprint == trained.fingerprint


def test_mask_generator_fits_cai_masks_and_round_trips(work, tmp_path):
    rows = list(read_generated(work / "cai"))
    fg = ForegroundExtractor("classical")
    model = MaskBank.fit(
        [r["mask"] for r in rows], [fg(r["id"], r["image"]) for r in rows], [r["anomaly_class"] for r in rows]
    )
    model.save(tmp_path / "m.npz")
    loaded = MaskBank.load(tmp_path / "m.npz")
    foreground = np.zeros((80, 60), np.uint8)
    foreground[10:70, 15:45] = 1
    areas = []
    for i in range(40):
        a = model.sample("scratch", foreground, np.random.default_rng(i))
        b = loaded.sample("scratch", foreground, np.random.default_rng(i))
        assert np.array_equal(a, b)
        assert a.dtype == np.uint8 and a.any() and not (a & (1 - foreground)).any()
        areas.append(int(a.sum()))
    assert len(set(areas)) > 10, "masks do not vary in size"
    with pytest.raises(CDMCheckpointError):
        model.sample("hole", foreground, np.random.default_rng(0))


def test_cli_trains_and_samples(work, tmp_path):
    from daad.cli.app import app

    folder = tmp_path / "targets"
    folder.mkdir()
    for t in kolektor_targets(2, skip=30):
        cv2.imwrite(str(folder / f"{Path(t.id).name}.png"), t.image)
    runner = CliRunner()
    ckpt, out = tmp_path / "ckpt", tmp_path / "out"
    result = runner.invoke(app, [
        "synth", "cdm", "train", "--data", str(work / "cai"), "--base-model", str(work / "sd"), "--out", str(ckpt),
        "--classes", "scratch", "--size", "32", "--steps", "2", "--batch-size", "2", "--foreground", "classical", "-q",
    ])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, [
        "synth", "cdm", "sample", "--checkpoint", str(ckpt), "--targets", str(folder), "--out", str(out),
        "--per-target", "2", "--inference-steps", "2", "--size", "64", "--foreground", "classical", "--seed", "5", "-q",
    ])
    assert result.exit_code == 0, result.output
    back = list(read_generated(out))
    assert len(back) == 4 and {r["anomaly_class"] for r in back} == {"scratch"}
    assert generator_info(out)["evaluation"] == "kolektorsdd"


def test_spatial_aware_embedding_depends_on_the_mask(trained):
    cdm = sampler(trained.output)
    model = cdm.model()
    left, right = torch.zeros((2, 1, 32, 32)), torch.zeros((2, 1, 32, 32))
    left[:, :, 4:12, 2:8], right[:, :, 20:28, 24:30] = 1, 1
    text = [f"a photo of {spelled(class_token('scratch'))} {spelled(SPATIAL_TOKEN)}"] * 2
    with torch.no_grad():
        a, b = cdm._context(model, text, left)[2:], cdm._context(model, text, right)[2:]
    assert (a - b).abs().max() > 1e-6, "the prompt embedding ignores where the mask is"
    with pytest.raises(ValueError, match="spatial vectors"):
        model.base.encode_prompts(text)


def test_learnt_mask_generator_samples_class_masks_on_the_foreground(trained):
    cdm = sampler(trained.output)
    targets = kolektor_targets(2, skip=40)
    jobs = list(cdm._jobs(targets, seed=3))
    learnt = cdm._learnt_masks(cdm.model(), jobs, seed=3)
    again = cdm._learnt_masks(cdm.model(), jobs, seed=3)
    for job, a, b in zip(jobs, learnt, again, strict=True):
        assert np.array_equal(a.mask, b.mask) and a.mask.any()
        assert not (a.mask & (1 - job.foreground)).any(), "a learnt mask leaves the foreground"
        if a.mask_from == "learnt":
            assert not np.array_equal(a.mask, job.mask)
    banked = list(sampler(trained.output, mask_generator="bank").generate(targets[:1], None, seed=3))
    assert {r.details["mask_from"] for r in banked} == {"bank"}


def test_mask_from_image_thresholds_resizes_and_clips():
    image = np.zeros((16, 16, 3), np.uint8)
    image[4:12, 0:16] = 255
    foreground = np.zeros((32, 48), np.uint8)
    foreground[:, :24] = 1
    mask = mask_from_image(image, foreground)
    assert mask.shape == (32, 48) and mask[16, 10] == 1 and not mask[:, 24:].any() and not mask[:4].any()
    assert mask_from_image(np.zeros((16, 16, 3), np.uint8), foreground) is None


def test_otsu_fallback_warns(monkeypatch):
    monkeypatch.delenv("DAAD_REMBG_MODEL", raising=False)
    with pytest.warns(UserWarning, match="Otsu"):
        assert foreground_extractor("auto").method == "classical"


@pytest.mark.parametrize("option", [{"mixed_precision": "bf16"}, {"gradient_checkpointing": True, "max_grad_norm": 1.0}])
def test_memory_options_train(work, tmp_path, option):
    result = train(config(work, tmp_path / "ckpt", steps=2, **option), progress=False)
    assert len(result.losses) == 2 and all(np.isfinite(result.losses))
    assert result.tokens.rows.dtype == torch.float32
    if "mixed_precision" in option:
        assert result.base.unet.dtype == torch.bfloat16
    reloaded = sampler(result.output).model()
    assert torch.equal(reloaded.tokens.rows, result.tokens.rows.detach())
