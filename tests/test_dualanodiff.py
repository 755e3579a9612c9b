"""DualAnoDiff on a tiny randomly initialised SD model, trained on real SD-saliency-900 pairs.

Real diffusers UNet/VAE/CLIP, real training and sampling code; 16-32 px, a few steps.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import datasets
import numpy as np
import pytest
import torch

from daad.registry import Registry
from daad.registry.roots import Roots
from daad.synthesis.base import Target
from daad.synthesis.diffusion import fingerprint, load_base
from daad.synthesis.dualanodiff.attention import PART, WHOLE, BackgroundPass, DualConfig, gammas, install
from daad.synthesis.dualanodiff.checkpoint import TEXT_ENCODER_FILE, WEIGHTS_FILE, read_info
from daad.synthesis.dualanodiff.data import FewShotSplit, TrainingPair, pairs_from_view, random_flips
from daad.synthesis.dualanodiff.masks import threshold_mask
from daad.synthesis.dualanodiff.pipeline import DualAnoDiffPipeline
from daad.synthesis.dualanodiff.sample import SampleConfig, sample
from daad.synthesis.dualanodiff.train import TrainConfig, latest_checkpoint, train
from daad.synthesis.output import generator_info
from tests.conftest import SD_ROOT
from tests.helpers.tiny_sd import tiny_sd  # noqa: F401  (fixture)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


RESOLUTION = 32
NAMES = ("Sc_1", "Sc_2", "Sc_3")


def real_pair(name: str) -> TrainingPair:
    image = cv2.cvtColor(cv2.imread(str(SD_ROOT / "Source Images" / f"{name}.bmp")), cv2.COLOR_BGR2RGB)
    mask = (cv2.imread(str(SD_ROOT / "Ground truth" / f"{name}.png"), cv2.IMREAD_GRAYSCALE) > 127).astype(np.uint8)
    return TrainingPair(name, image, mask, "scratch", "LicenseRef-research", (f"sd_saliency_900/{name}",))


def train_config(sd, out, **kw) -> TrainConfig:
    args = dict(
        resolution=RESOLUTION,
        steps=4,
        batch_size=2,
        rank=4,
        learning_rate=1e-2,
        foreground="classical",
        checkpoint_every=2,
        progress=False,
    )
    return TrainConfig(str(sd), out, **args | kw)


@pytest.fixture(scope="module")
def base(tiny_sd):  # noqa: F811
    return load_base(tiny_sd)


@pytest.fixture(scope="module")
def trained(tiny_sd, tmp_path_factory):  # noqa: F811
    """Four training steps (SAIM + BCM) on three real scratches; returns (base after training, result)."""
    trained_base = load_base(tiny_sd)
    result = train(train_config(tiny_sd, tmp_path_factory.mktemp("dad") / "model"), [real_pair(n) for n in NAMES], base=trained_base)
    return trained_base, result


def unet_eps(base, layers, latents, background=None):
    """UNet prediction for a pair batch at t=500 (background: run a capture pass first)."""
    t = torch.tensor(500)
    embeddings = base.encode_prompts(["a vfx with sks", "sks"]).repeat(latents.shape[0] // 2, 1, 1)
    with torch.no_grad():
        kwargs = None
        if background is not None:
            store = BackgroundPass()
            base.unet(background, t, embeddings[0::2], cross_attention_kwargs=store.capture())
            kwargs = store.fuse()
        return base.unet(latents, t, embeddings, cross_attention_kwargs=kwargs).sample


def pair_latents(seed=0, n=1):
    return torch.randn((2 * n, 4, 8, 8), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("saim", [True, False])
def test_saim_couples_the_branches_only_when_on(base, saim):
    layers = install(base.unet, DualConfig(rank=4, saim=saim, bcm=False))
    x = pair_latents()
    reference = unet_eps(base, layers, x)
    for changed, other in ((PART, WHOLE), (WHOLE, PART)):
        y = x.clone()
        y[changed] = torch.randn(y[changed].shape, generator=torch.Generator().manual_seed(7))
        moved = (unet_eps(base, layers, y)[other] - reference[other]).abs().max().item()
        if saim:
            assert moved > 1e-3, f"changing branch {changed} left branch {other} unchanged with SAIM on"
        else:
            assert moved < 1e-6, f"branch {other} depends on branch {changed} with SAIM off ({moved})"


def test_bcm_gamma_zero_is_a_no_op_and_default_gamma_is_not(base):
    x = pair_latents()
    background = torch.randn((1, 4, 8, 8), generator=torch.Generator().manual_seed(3))
    off = unet_eps(base, install(base.unet, DualConfig(rank=4, saim=False, bcm=False)), x, background)
    zero_layers = install(base.unet, DualConfig(rank=4, saim=False, bcm=True, gamma_init=0.0))
    zero = unet_eps(base, zero_layers, x, background)
    default_layers = install(base.unet, DualConfig(rank=4, saim=False, bcm=True))
    assert torch.allclose(gammas(default_layers), torch.tensor(0.1))
    default = unet_eps(base, default_layers, x, background)
    assert torch.equal(zero, off)
    assert (default[WHOLE] - off[WHOLE]).abs().max() > 1e-4, "BCM with gamma 0.1 did not change the whole branch"
    assert torch.equal(default[PART], off[PART]), "BCM must act on the whole branch only"


def test_each_branch_uses_its_own_lora_set(base):
    layers = install(base.unet, DualConfig(rank=4, saim=False, bcm=False))
    x = pair_latents()
    reference = unet_eps(base, layers, x)
    for branch, other in ((PART, WHOLE), (WHOLE, PART)):
        with torch.no_grad():
            for proc in layers.values():
                proc.branches[branch].to_out.up.weight.normal_(generator=torch.Generator().manual_seed(branch))
        changed = unet_eps(base, layers, x)
        assert (changed[branch] - reference[branch]).abs().max() > 1e-3, f"LoRA set {branch} does not act on its branch"
        assert torch.equal(changed[other], reference[other]), f"LoRA set {branch} leaked into branch {other}"
        reference = changed


def test_training_moves_only_the_trainable_weights(trained, tiny_sd):  # noqa: F811
    trained_base, result = trained
    fresh = load_base(tiny_sd)
    for name in ("unet", "vae", "text_encoder"):
        before = getattr(fresh, name).state_dict()
        after = {
            k.replace(".base_layer", ""): v
            for k, v in getattr(trained_base, name).state_dict().items()
            if ".processor." not in k and "lora_" not in k
        }
        assert before.keys() == after.keys()
        assert all(torch.equal(before[k], after[k]) for k in before), f"a frozen {name} weight changed"
    layers = DualAnoDiffPipeline.from_checkpoint(result.output_dir).layers
    assert result.step == 4 and all(np.isfinite(result.losses))
    assert not torch.allclose(gammas(layers), torch.tensor(0.1)), "gamma did not move in training"
    for proc in layers.values():
        whole, part = (proc.branches[b].to_q.up.weight for b in (WHOLE, PART))
        assert whole.abs().sum() > 0 and part.abs().sum() > 0
        assert not torch.equal(whole, part), "the two LoRA sets trained to the same weights"
    assert result.fingerprint == fingerprint([result.output_dir / WEIGHTS_FILE, result.output_dir / TEXT_ENCODER_FILE])
    info = read_info(result.output_dir)
    assert info.text_encoder_lora, "the text encoder (τθ) is trained by default"
    assert info.licences == {f"sd_saliency_900/{n}": "LicenseRef-research" for n in NAMES}
    assert info.source_ids == [f"sd_saliency_900/{n}" for n in NAMES] and info.anomaly_class == "scratch"


def test_resume_from_checkpoint_reproduces_the_uninterrupted_run(trained, tiny_sd, tmp_path):  # noqa: F811
    _, result = trained
    resumed = tmp_path / "resumed"
    resumed.mkdir()
    shutil.copytree(latest_checkpoint(result.output_dir), resumed / "checkpoint-2")
    again = train(train_config(tiny_sd, resumed, resume=True), [real_pair(n) for n in NAMES])
    assert again.step == 4 and len(again.losses) == 2
    assert again.fingerprint == result.fingerprint


def test_reloaded_checkpoint_samples_identically_and_pairs_stay_aligned(trained):
    trained_base, result = trained
    info = read_info(result.output_dir)
    in_memory = DualAnoDiffPipeline(trained_base, trained_base_layers(trained_base), info.prompts, info.resolution)
    reloaded = DualAnoDiffPipeline.from_checkpoint(result.output_dir)
    backgrounds = torch.rand((3, 3, RESOLUTION, RESOLUTION), generator=torch.Generator().manual_seed(5)) * 2 - 1
    seeds = (11, 12, 13)
    call = dict(num_inference_steps=3, guidance_scale=2.5)

    def gens(chosen):
        return [torch.Generator().manual_seed(s) for s in chosen]

    batch = reloaded(3, generator=gens(seeds), backgrounds=backgrounds, **call)
    memory = in_memory(3, generator=gens(seeds), backgrounds=backgrounds, **call)
    assert np.array_equal(batch.whole, memory.whole) and np.array_equal(batch.part, memory.part)
    for i, seed in enumerate(seeds):  # each pair of the guided batch equals that pair sampled alone
        alone = reloaded(1, generator=gens([seed]), backgrounds=backgrounds[i : i + 1], **call)
        assert np.abs(alone.whole[0].astype(int) - batch.whole[i]).max() <= 1
        assert np.abs(alone.part[0].astype(int) - batch.part[i]).max() <= 1
    assert not np.array_equal(batch.whole[0], batch.whole[1])


def trained_base_layers(trained_base):
    """The processors installed in a trained base, as the ModuleDict ``install`` returned."""
    return torch.nn.ModuleDict(
        {name.replace(".", "__"): proc for name, proc in trained_base.unet.attn_processors.items()}
    )


def test_sample_writes_a_loadable_dataset_with_binary_masks(trained, tmp_path):
    _, result = trained
    targets = [Target(f"sd_saliency_900/{n}", real_pair(n).image, "LicenseRef-research") for n in ("In_1", "Pa_1")]
    out = tmp_path / "generated"
    config = SampleConfig(
        result.output_dir, out, num_pairs=3, num_inference_steps=2, batch_size=2, seed=4, foreground="classical", progress=False
    )
    summary, skipped = sample(config, targets)
    assert summary.rows + skipped == 3 and summary.rows > 0
    ds = datasets.load_dataset(str(out), split="train")
    assert len(ds) == summary.rows
    for row in ds:
        mask = np.asarray(row["mask"].convert("L"))
        assert set(np.unique(mask)) <= {0, 255} and mask.any()
        assert row["image"].size == (RESOLUTION, RESOLUTION) and row["generator"] == "dualanodiff"
        assert row["target_id"] in {t.id for t in targets}
        assert row["source_ids"] == [f"sd_saliency_900/{n}" for n in NAMES]
        assert json.loads(row["details"])["checkpoint"] == result.fingerprint
    params = generator_info(out)["params"]
    assert params["checkpoint_fingerprint"] == result.fingerprint and params["prompts"]["part"] == "sks"


def test_threshold_mask_recovers_a_real_anomaly_from_its_part_image():
    pair = real_pair("Sc_5")
    part = pair.image * pair.mask[..., None]
    found = threshold_mask(part)
    iou = (found & pair.mask).sum() / (found | pair.mask).sum()
    assert iou > 0.9, f"IoU {iou:.2f}"


def test_first_third_split_of_a_real_registry_view(sd_manifests):
    view = Registry(sd_manifests, Roots({"sd_saliency_900": SD_ROOT})).view(evaluation="none", classes=["scratch"])
    records = list(view)
    split = FewShotSplit.first_third(records)
    assert len(split.train_ids) == 99 and len(split.held_out_ids) == 198  # 3 of 300 are marked copies
    assert not set(split.train_ids) & set(split.held_out_ids)
    few = FewShotSplit(split.train_ids[:2], split.held_out_ids)
    pairs = pairs_from_view(view, few)
    assert [p.id for p in pairs] == list(split.train_ids[:2]) and all(p.mask.any() for p in pairs)


def test_cli_few_shot_train_then_sample(tiny_sd, sd_manifests, tmp_path):  # noqa: F811
    from typer.testing import CliRunner

    from daad.cli import app

    runner = CliRunner()
    model, out, targets = tmp_path / "model", tmp_path / "out", tmp_path / "normals"
    targets.mkdir()
    for name in ("In_2", "Pa_2"):
        shutil.copy(SD_ROOT / "Source Images" / f"{name}.bmp", targets / f"{name}.bmp")
    common = ["--manifests", str(sd_manifests), "--root", f"sd_saliency_900={SD_ROOT}", "--quiet"]
    trained = runner.invoke(
        app,
        ["synth", "dualanodiff", "train", "--base-model", str(tiny_sd), "--out", str(model), "--classes", "scratch",
         "--origin", "sd_saliency_900", "--split", "first-third", "--size", "32", "--steps", "1",
         "--batch-size", "1", "--rank", "2", "--foreground", "classical", *common],
    )
    assert trained.exit_code == 0, trained.output
    info = read_info(model)
    assert info.split["evaluation"] == "sd_saliency_900"
    assert len(info.split["train_ids"]) == 99 and len(info.split["held_out_ids"]) == 198
    assert sorted(info.training_ids) == info.split["train_ids"]
    sampled = runner.invoke(
        app,
        ["synth", "dualanodiff", "sample", "--checkpoint", str(model), "--out", str(out), "--num-pairs", "2",
         "--inference-steps", "2", "--targets", str(targets), "--size", "32", "--foreground", "classical", *common],
    )
    assert sampled.exit_code == 0, sampled.output
    recorded = generator_info(out)
    assert recorded["generator"] == "dualanodiff" and recorded["evaluation"] == "sd_saliency_900"
    assert recorded["params"]["split"]["held_out_ids"] == info.split["held_out_ids"]
    ds = datasets.load_dataset(str(out), split="train")
    assert 0 < len(ds) <= 2 and not set(ds[0]["source_ids"]) & set(info.split["held_out_ids"])


def test_text_encoder_lora_trains_saves_and_reloads(tiny_sd, tmp_path):  # noqa: F811
    trained_base = load_base(tiny_sd)
    config = train_config(tiny_sd, tmp_path / "model", steps=1, train_text_encoder=True, bcm=False)
    result = train(config, [real_pair(n) for n in NAMES], base=trained_base)
    assert (result.output_dir / TEXT_ENCODER_FILE).is_file()
    assert result.fingerprint == fingerprint([result.output_dir / WEIGHTS_FILE, result.output_dir / TEXT_ENCODER_FILE])
    frozen = load_base(tiny_sd).text_encoder.state_dict()
    after = {k.replace(".base_layer", ""): v for k, v in trained_base.text_encoder.state_dict().items() if "lora_" not in k}
    assert frozen.keys() == after.keys() and all(torch.equal(frozen[k], after[k]) for k in frozen)
    lora_b = [v for k, v in trained_base.text_encoder.state_dict().items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b), "the text-encoder LoRA did not train"
    info = read_info(result.output_dir)
    in_memory = DualAnoDiffPipeline(trained_base, trained_base_layers(trained_base), info.prompts, info.resolution)
    reloaded = DualAnoDiffPipeline.from_checkpoint(result.output_dir)
    a = in_memory(1, generator=torch.Generator().manual_seed(2), num_inference_steps=2)
    b = reloaded(1, generator=torch.Generator().manual_seed(2), num_inference_steps=2)
    assert np.array_equal(a.whole, b.whole) and np.array_equal(a.part, b.part)


@pytest.mark.parametrize(
    "option",
    [{"mixed_precision": "bf16"}, {"mixed_precision": "fp16"}, {"gradient_checkpointing": True}],
    ids=["bf16", "fp16", "checkpointing"],
)
def test_each_memory_option_trains_and_reloads_bit_identical(tiny_sd, tmp_path, option):  # noqa: F811
    trained_base = load_base(tiny_sd)
    config = train_config(tiny_sd, tmp_path / "model", steps=2, checkpoint_every=0, **option)
    result = train(config, [real_pair(n) for n in NAMES], base=trained_base)
    assert result.step == 2 and all(np.isfinite(result.losses))
    layers = trained_base_layers(trained_base)
    assert all(p.dtype == torch.float32 for p in layers.parameters()), "trainables must stay float32"
    if "mixed_precision" in option:
        assert trained_base.unet.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[option["mixed_precision"]]
    assert not torch.allclose(gammas(layers), torch.tensor(0.1)), "gamma did not move"
    reloaded = DualAnoDiffPipeline.from_checkpoint(result.output_dir)
    saved, memory = reloaded.layers.state_dict(), layers.state_dict()
    assert saved.keys() == memory.keys() and all(torch.equal(saved[k], memory[k]) for k in saved)
    lora = {k: v for k, v in trained_base.text_encoder.state_dict().items() if "lora_" in k}
    back = {k: v for k, v in reloaded.base.text_encoder.state_dict().items() if "lora_" in k}
    assert lora and lora.keys() == back.keys() and all(torch.equal(lora[k].float(), back[k]) for k in lora)


def test_gradient_checkpointing_gives_the_same_weights(trained, tiny_sd, tmp_path):  # noqa: F811
    """The background pass reaches the dual pass through cross_attention_kwargs, so recomputing it is exact."""
    _, result = trained
    again = train(train_config(tiny_sd, tmp_path / "model", gradient_checkpointing=True), [real_pair(n) for n in NAMES])
    assert again.losses == result.losses
    assert again.fingerprint == result.fingerprint


def test_gradient_clipping_bounds_the_update():
    from daad.synthesis.diffusion import TrainingPrecision

    for max_norm, expected in ((None, 100.0), (0.5, 0.5)):
        weight = torch.nn.Parameter(torch.zeros(4))
        optimizer = torch.optim.SGD([weight], lr=1.0)
        TrainingPrecision(None, torch.device("cpu"), max_norm).step((weight * 50).sum(), optimizer, [weight])
        assert weight.norm().item() == pytest.approx(expected), f"max_grad_norm {max_norm}"
        assert weight.grad is None


def test_half_precision_sampling_loads_the_same_weights_in_bf16(trained):
    _, result = trained
    full = DualAnoDiffPipeline.from_checkpoint(result.output_dir)
    half = DualAnoDiffPipeline.from_checkpoint(result.output_dir, dtype=torch.bfloat16)
    assert half.base.unet.dtype == torch.bfloat16 and half.base.vae.dtype == torch.bfloat16
    for key, value in full.layers.state_dict().items():
        assert torch.equal(half.layers.state_dict()[key], value.to(torch.bfloat16))
    backgrounds = torch.zeros((1, 3, RESOLUTION, RESOLUTION))
    pairs = half(1, generator=torch.Generator().manual_seed(3), num_inference_steps=2, backgrounds=backgrounds)
    assert pairs.whole.shape == (1, RESOLUTION, RESOLUTION, 3) and pairs.whole.dtype == np.uint8


def test_cli_from_generated_keeps_one_class_and_the_licences(tiny_sd, sd_manifests, tmp_path):  # noqa: F811
    from typer.testing import CliRunner

    from daad.cli import app
    from daad.synthesis.base import Synthesis
    from daad.synthesis.output import write_generated

    pair = real_pair("Sc_1")
    rows = [
        Synthesis(pair.image, pair.mask, cls, "sd_saliency_900/In_1", (f"sd_saliency_900/{name}",), {})
        for cls, name in (("scratch", "Sc_1"), ("crack", "Sc_2"), ("scratch", "Sc_3"))
    ]
    generated = tmp_path / "cai"
    write_generated(generated, rows, generator="cai", params={}, seed=0, evaluation="none", progress=False)
    model = tmp_path / "model"
    args = ["synth", "dualanodiff", "train", "--base-model", str(tiny_sd), "--out", str(model),
            "--from-generated", str(generated), "--size", "32", "--steps", "1", "--batch-size", "1",
            "--rank", "2", "--foreground", "classical", "--no-bcm", "--manifests", str(sd_manifests),
            "--root", f"sd_saliency_900={SD_ROOT}", "--quiet"]
    mixed = CliRunner().invoke(app, args)
    assert mixed.exit_code != 0 and "mix classes" in str(mixed.exception)
    trained = CliRunner().invoke(app, [*args, "--classes", "scratch"])
    assert trained.exit_code == 0, trained.output
    info = read_info(model)
    assert info.anomaly_class == "scratch" and len(info.training_ids) == 2
    assert set(info.licences) == {"sd_saliency_900/Sc_1", "sd_saliency_900/Sc_3", "sd_saliency_900/In_1"}
    assert "unknown" not in info.licences.values(), info.licences


def test_random_flips_are_horizontal_and_vertical_and_keep_pairs_aligned():
    base = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).view(2, 3, 4, 5).repeat(16, 1, 1, 1)
    whole, part = random_flips([base, base * 2], torch.Generator().manual_seed(0))
    assert torch.equal(part, whole * 2), "whole and part of a pair were flipped differently"
    seen = set()
    for row, original in zip(whole, base, strict=True):
        variants = {"none": original, "h": original.flip(-1), "v": original.flip(-2), "hv": original.flip(-1).flip(-2)}
        seen |= {name for name, v in variants.items() if torch.equal(row, v)}
    assert seen == {"none", "h", "v", "hv"}, seen


def test_a_checkpoint_cut_short_is_never_taken_for_one(tiny_sd, tmp_path, monkeypatch):  # noqa: F811
    """A crash while a checkpoint is written leaves only ``checkpoint-N.tmp``, which resuming ignores."""
    import daad.synthesis.dualanodiff.train as dad_train

    real_save = torch.save

    def crash_on_rng(obj, path, *args, **kwargs):
        if Path(path).name == dad_train.RNG_FILE:
            raise OSError("disk full")
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(dad_train.torch, "save", crash_on_rng)
    out = tmp_path / "model"
    with pytest.raises(OSError, match="disk full"):
        train(train_config(tiny_sd, out), [real_pair(n) for n in NAMES])
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2.tmp"]
    assert latest_checkpoint(out) is None
