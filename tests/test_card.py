"""The built dataset's card as the Hub reads it: licence fields, task and size metadata, a
Data Fields section naming every column, only leak-free configs that differ from default."""

from __future__ import annotations

import datasets
import yaml

from conftest import SD_ROOT, copy_manifests
from daad.dataset.build import build
from daad.dataset.card import hub_licence, size_category
from daad.dataset.features import REGISTRY_FEATURES
from daad.registry import Registry
from daad.registry.roots import Roots


def _front_and_body(card: str) -> tuple[dict, str]:
    _, front, body = card.split("---\n", 2)
    return yaml.safe_load(front), body


def test_card_of_a_real_build_meets_the_hub_spec(tmp_path):
    manifests = copy_manifests(tmp_path / "m", "sd_saliency_900")
    out = tmp_path / "daad"
    build(Registry(manifests, Roots({"sd_saliency_900": SD_ROOT})), out, progress=False)
    front, body = _front_and_body((out / "README.md").read_text())
    assert front["license"] == "other" and front["license_name"] == "LicenseRef-SD-saliency-900-research"
    assert front["license_link"] == "README.md#licences" and "## Licences" in body
    assert front["task_categories"] == ["image-segmentation"] and front["task_ids"] == ["semantic-segmentation"]
    assert front["size_categories"] == ["n<1K"] and front["pretty_name"]
    for column in REGISTRY_FEATURES:
        assert f"| `{column}` |" in body
    assert "x, y, width, height" in body and "255 = anomaly" in body
    names = [c["config_name"] for c in front["configs"]]
    default = next(c for c in front["configs"] if c["config_name"] == "default")["data_files"]
    for config in front["configs"]:
        if config["config_name"].startswith("no-"):
            assert config["data_files"] != default
    assert "no-sd_saliency_900" not in names  # everything is SD-saliency-900: that view is empty
    assert "no-kolektorsdd" not in names and "`kolektorsdd`" in body  # nothing leaks into it: said, not a config
    assert "Cross-domain Anomaly Injection" in body
    rows = datasets.load_dataset(str(out), "default", split="train")
    assert len(rows) == 895


def test_licence_fields_and_size_buckets():
    assert hub_licence(["CC-BY-4.0"]) == {"license": "cc-by-4.0"}
    both = hub_licence(["CC-BY-NC-SA-4.0", "LicenseRef-X", "LicenseRef-A"])
    assert both == {"license": ["cc-by-nc-sa-4.0", "other"], "license_name": "LicenseRef-A, LicenseRef-X",
                    "license_link": "README.md#licences"}
    assert hub_licence([]) == {"license": "unknown"}
    assert [size_category(n) for n in (0, 999, 1000, 6500, 10_000, 2_000_000)] == [
        "n<1K", "n<1K", "1K<n<10K", "1K<n<10K", "10K<n<100K", "1M<n<10M"]


def test_stats_plot_draws_every_class_present(sd_manifests, tmp_path):
    from PIL import Image
    from typer.testing import CliRunner

    from daad.cli import app

    result = CliRunner().invoke(app, ["stats", "--manifests", str(sd_manifests), "--plot", str(tmp_path / "s.png"), "--json"])
    assert result.exit_code == 0, result.output
    width, height = Image.open(tmp_path / "s.png").size
    assert width == 1400 and height == round(100 * (0.5 * 3 + 2.5))  # three classes in SD-saliency-900
    pixels = Image.open(tmp_path / "s.png").convert("RGB").getcolors(1 << 20)
    assert len(pixels) > 50  # bars, labels and legends were drawn, not an empty canvas
