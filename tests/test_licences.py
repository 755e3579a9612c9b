"""Licences: catalogue parsing, build policies, the card's licence and attribution sections,
and the licences a generator's output inherits."""

from __future__ import annotations

from dataclasses import replace

import datasets
import numpy as np
import pytest
from typer.testing import CliRunner

from conftest import REPO, SD_ROOT, copy_manifests
from daad.dataset.build import build
from daad.registry.catalogue import Catalogue
from daad.cli import app
from daad.licences import LicenceCatalogue, LicenceError, LicencePolicy, check_licence
from daad.registry.manifest import read_manifest, write_manifest
from daad.registry import Registry
from daad.registry.roots import Roots
from daad.synthesis.base import Synthesis
from daad.synthesis.output import write_generated


def test_every_licence_in_use_is_in_the_catalogue_with_its_flags():
    licences = LicenceCatalogue.load(REPO / "manifests")
    in_use = {e.licence for e in Catalogue.load(REPO / "manifests")}
    for path in (REPO / "manifests").glob("*.jsonl"):
        in_use |= {r.licence for r in read_manifest(path)}
    for lid in in_use:
        assert lid in licences, lid
    nc_sa = licences["CC-BY-NC-SA-4.0"]
    assert (nc_sa.commercial, nc_sa.attribution, nc_sa.share_alike) == (False, True, True)
    assert licences["CC-BY-4.0"].commercial and not licences["unknown"].commercial
    for value in ("CC BY 4.0", "LicenseRef-", "", None):
        with pytest.raises(ValueError):
            check_licence(value)


def test_malformed_catalogue_and_policies_are_named(tmp_path):
    (tmp_path / "licences.toml").write_text('["CC-BY-4.0"]\nname = "x"\ncommercial = "yes"\nattribution = true\nshare_alike = false\n')
    with pytest.raises(LicenceError, match="licence 'CC-BY-4.0': commercial, attribution and share_alike must be true or false"):
        LicenceCatalogue.load(tmp_path)
    catalogue = LicenceCatalogue.load(REPO / "manifests")
    with pytest.raises(LicenceError, match="'CC-BY-9.9' is not in licences.toml"):
        LicencePolicy.parse("CC-BY-4.0,CC-BY-9.9", catalogue)
    commercial = LicencePolicy.parse("commercial", catalogue)
    assert commercial.allows("CC-BY-4.0") and commercial.allows("CC-BY-SA-4.0")
    assert not commercial.allows("CC-BY-NC-SA-4.0") and not commercial.allows("unknown")
    research = LicencePolicy.parse("research", catalogue)
    assert research.allows("LicenseRef-SD-saliency-900-research") and not research.allows("unknown")
    allow = LicencePolicy.parse("CC-BY-NC-SA-4.0, CC-BY-4.0", catalogue)
    assert allow.name == "CC-BY-4.0,CC-BY-NC-SA-4.0" and not allow.allows("CC-BY-SA-4.0")


def test_redistribution_is_stated_per_licence_and_defaults_to_no_for_unstated_terms(tmp_path):
    catalogue = LicenceCatalogue.load(REPO / "manifests")
    redistributable = LicencePolicy.parse("redistributable", catalogue)
    assert redistributable.allowed == sorted(lic.id for lic in catalogue if lic.id.startswith("CC") or lic.id == "MIT")
    flags = '\nname = "x"\ncommercial = false\nattribution = true\nshare_alike = false\n'
    (tmp_path / "licences.toml").write_text(f'["CC-BY-4.0"]{flags}["LicenseRef-x"]{flags}[unknown]{flags}')
    loaded = LicenceCatalogue.load(tmp_path)
    assert [lic.redistribution for lic in loaded] == [True, False, False]  # CC-BY-4.0, LicenseRef-x, unknown
    (tmp_path / "licences.toml").write_text(f'["CC-BY-4.0"]{flags}redistribution = "yes"\n')
    with pytest.raises(LicenceError, match="redistribution must be true or false"):
        LicenceCatalogue.load(tmp_path)


@pytest.fixture
def mixed_registry(tmp_path) -> Registry:
    """Six SD-saliency-900 records: four under its research licence, one CC-BY-4.0, one CC-BY-SA-4.0."""
    manifests = copy_manifests(tmp_path / "manifests")
    records = list(read_manifest(REPO / "manifests" / "sd_saliency_900.jsonl"))[:6]
    records[4] = replace(records[4], licence="CC-BY-4.0")
    records[5] = replace(records[5], licence="CC-BY-SA-4.0")
    write_manifest(manifests / "sd_saliency_900.jsonl", records)
    return Registry(manifests, Roots({"sd_saliency_900": SD_ROOT}))


def test_commercial_build_keeps_only_commercial_licences_and_card_lists_them(mixed_registry, tmp_path):
    out = tmp_path / "commercial"
    summary = build(mixed_registry, out, licence_policy=LicencePolicy.parse("commercial", LicenceCatalogue.load(mixed_registry.manifests_dir)), progress=False)
    assert summary.accepted == 2
    assert summary.skipped == {"licence_policy:LicenseRef-SD-saliency-900-research": 4}
    ds = datasets.load_dataset(str(out), split="train")
    assert sorted(ds["licence"]) == ["CC-BY-4.0", "CC-BY-SA-4.0"]
    card = (out / "README.md").read_text()
    assert "Licence policy of this build: `commercial`." in card
    assert "| CC-BY-4.0 | 1 | yes | yes | no | https://creativecommons.org/licenses/by/4.0/ |" in card
    assert "| CC-BY-SA-4.0 | 1 | yes | yes | yes | https://creativecommons.org/licenses/by-sa/4.0/ |" in card
    assert "`CC-BY-SA-4.0`: commercial use, attribution required, share-alike" in card
    assert "| LicenseRef-SD-saliency-900-research |" not in card  # only in "Not built"
    assert "| licence_policy:LicenseRef-SD-saliency-900-research | 4 |" in card


def test_cli_build_all_policy_card_has_counts_restrictions_and_attribution(mixed_registry, tmp_path):
    out = tmp_path / "all"
    result = CliRunner().invoke(app, [
        "build", "--out", str(out), "--manifests", str(mixed_registry.manifests_dir),
        "--root", f"sd_saliency_900={SD_ROOT}", "--no-download", "--licence-policy", "all", "-q",
    ])
    assert result.exit_code == 0, result.output
    card = (out / "README.md").read_text()
    assert "| LicenseRef-SD-saliency-900-research | 4 | no | yes | no | https://github.com/SongGuorong/MCITF |" in card
    assert "`LicenseRef-SD-saliency-900-research`: non-commercial" in card
    attribution = card.split("## Attribution", 1)[1]
    assert "Licence: `LicenseRef-SD-saliency-900-research` (https://github.com/SongGuorong/MCITF)" in attribution
    assert "```bibtex" in attribution
    result = CliRunner().invoke(app, [
        "build", "--out", str(tmp_path / "bad"), "--manifests", str(mixed_registry.manifests_dir),
        "--root", f"sd_saliency_900={SD_ROOT}", "--no-download", "--licence-policy", "CC-BY-5.0", "-q",
    ])
    assert result.exit_code != 0 and not (tmp_path / "bad").exists()


def test_generated_card_inherits_restrictive_input_licences(tmp_path):
    rows = [
        Synthesis(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8), "crack", "target/a", ("mvtec_ad/x",)),
        Synthesis(np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.uint8), "crack", "target/b", ("visa/y",)),
    ]
    licences = {"mvtec_ad/x": "CC-BY-NC-SA-4.0", "visa/y": "CC-BY-4.0", "target/a": "CC-BY-4.0", "target/b": "CC-BY-4.0"}
    write_generated(tmp_path / "gen", rows, generator="g", params={}, seed=0, evaluation="none",
                    input_licences=licences, progress=False)
    card = (tmp_path / "gen" / "README.md").read_text()
    assert "| CC-BY-NC-SA-4.0 | 1 |" in card and "| CC-BY-4.0 | 2 |" in card
    assert "**Restricted:** rows carry `CC-BY-NC-SA-4.0`" in card
