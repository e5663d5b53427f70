"""Fitted adapters in the matrix: what fit is given, one fit per (data, degradation, seed), fidelity rows."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import matrix_config, write_config
from harness import config, matrix
from harness.cache import Store
from harness.data.coco import image_records


def _run(tmp_path: Path, registry, dataset, fit_data: str, **overrides):
    cfg = matrix_config(dataset, adapters=["identity", {"name": "meanshift", "params": {"fit_data": fit_data}}],
                        degradations=["none", {"name": "gaussian_noise", "severities": [2, 4]}], **overrides)
    cache = tmp_path / "cache"
    summary = matrix.run(config.load(write_config(tmp_path / "m.yaml", cfg)), registry, out=tmp_path / "run",
                         store=Store(cache), progress=False)
    fits = [json.loads(p.read_text()) for p in sorted(cache.glob("fit/*/fit.json"))]
    return summary, fits


def test_unpaired_fit_uses_disjoint_halves_of_train_per_degradation(registry, dataset, tmp_path):
    summary, fits = _run(tmp_path, registry, dataset, "unpaired")
    assert summary["cells"]["failed"] == 0
    assert len(fits) == 3  # clean, s2, s4: B differs for each
    train = {Path(r["file_name"]).stem for r in image_records(dataset, "train")}
    for fit in fits:
        assert not set(fit["source"]) & set(fit["target"])
        assert set(fit["source"]) | set(fit["target"]) == train
    shifts = sorted(f["shift"] for f in fits)
    assert len(set(shifts)) == 3  # a noisier B gives another shift


def test_paired_fit_aligns_each_b_with_its_clean_original(registry, dataset, tmp_path):
    _, fits = _run(tmp_path, registry, dataset, "paired")
    assert fits and all(f["source"] == f["target"] for f in fits)


def test_source_only_fit_is_shared_by_every_degradation(registry, dataset, tmp_path):
    _, fits = _run(tmp_path, registry, dataset, "source")
    assert len(fits) == 1 and fits[0]["target"] == []


def test_fit_is_redone_per_seed_and_cached_across_runs(registry, dataset, tmp_path):
    _, fits = _run(tmp_path, registry, dataset, "source", seeds=[0, 1])
    assert sorted(f["seed"] for f in fits) == [0, 1]
    summary, _ = _run(tmp_path, registry, dataset, "source", seeds=[0, 1])
    assert summary["computed"] == 0


def test_every_cell_reports_fidelity_against_the_clean_images(registry, dataset, tmp_path):
    _run(tmp_path, registry, dataset, "unpaired")
    import csv

    rows = list(csv.DictReader(open(tmp_path / "run" / "results.csv")))
    fid = {(r["adapter"], r["degradation"], r["severity"], r["metric"]): r for r in rows if r["iou_type"] == "fidelity"}
    clean = fid[("identity", "none", "0", "PSNR")]
    assert clean["value"] == "" and "identical" in clean["note"]
    assert float(fid[("identity", "none", "0", "SSIM")]["value"]) == pytest.approx(1.0)
    noisy2, noisy4 = (float(fid[("identity", "gaussian_noise", s, "PSNR")]["value"]) for s in ("2", "4"))
    assert 10 < noisy4 < noisy2 < 60


def test_cli_trains_an_adapter_on_folders_then_adapts_a_folder(fake_env, dataset, tmp_path, capsys):
    from harness.cli import main
    from harness.imageio import list_images, read_image

    images = dataset / "images" / "test"
    noisy = tmp_path / "noisy"
    assert main(["degrade", "gaussian_noise", str(images), str(noisy), "--severity", "4", "--quiet"]) == 0
    fit = tmp_path / "fit"
    assert main(["train", "adapter", "meanshift", "--source", str(images), "--target", str(noisy),
                 "--param", "fit_data=paired", "--out", str(fit), "--quiet"]) == 0
    fitted = json.loads((fit / "fit.json").read_text())
    assert fitted["source"] == fitted["target"] == [p.stem for p in list_images(noisy)]
    out = tmp_path / "adapted"
    assert main(["adapt", "meanshift", str(noisy), str(out), "--fit", str(fit), "--quiet"]) == 0
    assert [p.name for p in list_images(out)] == [p.name for p in list_images(noisy)]
    assert read_image(out / list_images(noisy)[0].name).shape == read_image(list_images(noisy)[0]).shape

    assert main(["adapt", "meanshift", str(noisy), str(out)]) == 2
    assert "--fit" in capsys.readouterr().err
    assert main(["train", "adapter", "identity", "--source", str(images), "--out", str(fit)]) == 2
    assert main(["train", "adapter", "meanshift", "--source", str(images), "--out", str(fit)]) == 2
    assert "--target" in capsys.readouterr().err


def test_only_fit_stages_are_computed_on_request(fake_env, dataset, tmp_path, capsys):
    from harness.cli import main

    cfg = write_config(tmp_path / "m.yaml", matrix_config(dataset, adapters=["identity", "meanshift"]))
    cache = tmp_path / "cache"
    assert main(["run", str(cfg), "--only", "fit", "--cache", str(cache), "--quiet"]) == 0
    assert {p.parent.parent.name for p in cache.glob("*/*/stage.json")} == {"fit"}
    assert len(list(cache.glob("fit/*/fit.json"))) == 2  # clean and gaussian_noise s3
    assert main(["run", str(cfg), "--only", "fitt", "--cache", str(cache)]) == 2
    assert "unknown stage kind 'fitt'" in capsys.readouterr().err


def test_fit_split_enters_the_config_hash_only_when_set(dataset, tmp_path):
    base = matrix_config(dataset)
    plain = config.load(write_config(tmp_path / "a.yaml", base)).hash
    assert config.load(write_config(tmp_path / "b.yaml", {**base, "fit_split": "train"})).hash == plain
    assert config.load(write_config(tmp_path / "c.yaml", {**base, "fit_split": "val"})).hash != plain
