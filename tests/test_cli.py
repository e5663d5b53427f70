"""Bad input at the command line: one line on stderr naming the file or key, a non-zero exit, nothing lost."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import matrix_config, subprocess_env, write_config
from harness.cli import main


def fails_with(capsys, argv: list[str], *needles: str) -> str:
    """Run the CLI in-process; assert exit code 2 and a single stderr line containing every needle."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    assert err.startswith("harness: error: ")
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    return err


def run_args(cfg: Path, tmp_path: Path) -> list[str]:
    return ["run", str(cfg), "--cache", str(tmp_path / "cache"), "--out", str(tmp_path / "run"), "--quiet"]


def test_malformed_yaml(fake_env, tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("name: demo\nadapters: [identity\nseeds: [0]\n")
    fails_with(capsys, run_args(cfg, tmp_path), str(cfg), "malformed YAML", "line ")


def test_missing_config_file(fake_env, tmp_path, capsys):
    fails_with(capsys, run_args(tmp_path / "nope.yaml", tmp_path), str(tmp_path / "nope.yaml"), "not found")


def test_unknown_top_level_key(fake_env, dataset, tmp_path, capsys):
    cfg = write_config(tmp_path / "m.yaml", {**matrix_config(dataset), "colour": "red"})
    fails_with(capsys, run_args(cfg, tmp_path), str(cfg), "unknown key 'colour'", "adapters")


def test_unknown_plugin_name_lists_the_available_ones(fake_env, dataset, tmp_path, capsys):
    cfg = write_config(tmp_path / "m.yaml", matrix_config(dataset, adapters=["cyclegan-typo"]))
    fails_with(capsys, run_args(cfg, tmp_path), str(cfg), "adapters[0]", "cyclegan-typo", "identity", "smooth")


def test_unknown_plugin_param(fake_env, dataset, tmp_path, capsys):
    cfg = write_config(tmp_path / "m.yaml", matrix_config(
        dataset, degradations=["none", {"name": "gaussian_noise", "params": {"sigmaa": 3}}]))
    fails_with(capsys, run_args(cfg, tmp_path), str(cfg), "degradations[1]", "'sigmaa'")


def test_unknown_segmenter_profile(fake_env, dataset, tmp_path, capsys):
    cfg = write_config(tmp_path / "m.yaml", matrix_config(dataset, segmenters=[{"name": "threshold"}]))
    fails_with(capsys, run_args(cfg, tmp_path), str(cfg), "segmenters[0]", "profile 'cpu'", "tiny")


def test_missing_dataset_folder(fake_env, tmp_path, capsys):
    missing = tmp_path / "no-such-dataset"
    cfg = write_config(tmp_path / "m.yaml", matrix_config(missing))
    fails_with(capsys, run_args(cfg, tmp_path), str(cfg), "dataset", str(missing))
    assert not (tmp_path / "run").exists()  # no empty run folder left behind


def test_corrupt_image_in_degrade(fake_env, dataset, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    shutil.copy(next((dataset / "images" / "test").iterdir()), src / "a_good.png")
    (src / "b_bad.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    fails_with(capsys, ["degrade", "gaussian_noise", str(src), str(tmp_path / "out"), "--severity", "2", "--quiet"],
               str(src / "b_bad.png"))


def test_unknown_degradation_in_degrade(fake_env, dataset, tmp_path, capsys):
    fails_with(capsys, ["degrade", "gaussian_nosie", str(dataset / "images" / "test"), str(tmp_path / "out"),
                        "--severity", "2"], "gaussian_nosie", "gaussian_noise", "jpeg")


def test_bad_severity_in_degrade(fake_env, dataset, tmp_path, capsys):
    fails_with(capsys, ["degrade", "jpeg", str(dataset / "images" / "test"), str(tmp_path / "out"),
                        "--severity", "9"], "jpeg", "severity 9")


@pytest.mark.parametrize("which", ["pred", "gt"])
def test_malformed_coco_json_in_evaluate(fake_env, dataset, tmp_path, capsys, which):
    bad = tmp_path / f"{which}.json"
    bad.write_text('{"images": [1, 2,')
    good_pred = tmp_path / "empty.json"
    good_pred.write_text("[]")
    argv = ["evaluate", str(bad if which == "gt" else dataset / "test.json"), str(bad if which == "pred" else good_pred)]
    fails_with(capsys, argv, str(bad), "malformed JSON")


def test_predictions_with_unknown_image_in_evaluate(fake_env, dataset, tmp_path, capsys):
    pred = tmp_path / "pred.json"
    pred.write_text('[{"image_id": 999, "category_id": 1, "score": 0.5, "bbox": [0, 0, 4, 4]}]')
    fails_with(capsys, ["evaluate", str(dataset / "test.json"), str(pred)], str(pred), "999")


def test_bad_param_syntax(fake_env, dataset, tmp_path, capsys):
    fails_with(capsys, ["degrade", "jpeg", str(dataset / "images" / "test"), str(tmp_path / "out"),
                        "--severity", "2", "--param", "quality"], "--param quality", "key=value")


def test_error_is_one_line_from_a_real_process(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("segmenters: [{name: threshold\n")
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", str(cfg), "--quiet"], cwd=tmp_path,
                          env=subprocess_env(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and str(cfg) in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("fmt", ["coco", "masks"])
def test_data_prepare_refuses_a_file_outside_its_folder(tmp_path, capsys, fmt):
    import cv2
    import numpy as np

    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    cv2.imwrite(str(tmp_path / "secret.png"), np.zeros((4, 4), np.uint8))
    if fmt == "coco":
        inputs = [str(tmp_path / "coco.json"), str(tmp_path / "images")]
        (tmp_path / "coco.json").write_text('{"images": [{"id": 1, "file_name": "../secret.png", "width": 4, '
                                            '"height": 4}], "annotations": [], "categories": [{"id": 1, "name": "a"}]}')
        needles = [inputs[0], "'../secret.png'", "outside the image folder"]
    else:
        inputs = [str(tmp_path / "images"), str(tmp_path / "masks"), "--classes", "a"]
        cv2.imwrite(str(tmp_path / "images" / "x.png"), np.zeros((4, 4), np.uint8))
        (tmp_path / "masks" / "x.png").symlink_to(tmp_path / "secret.png")
        needles = [str(tmp_path / "masks" / "x.png"), "mask leads to", str(tmp_path / "secret.png")]
    fails_with(capsys, ["data", "prepare", fmt, *inputs, "--out", str(tmp_path / "out"), "--quiet"], *needles)
    assert not (tmp_path / "out").exists()


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_config_gone_bad_loses_nothing(fake_env, dataset, tmp_path, capsys):
    cfg = write_config(tmp_path / "m.yaml", matrix_config(dataset))
    assert main(run_args(cfg, tmp_path)) == 0
    capsys.readouterr()
    run_before, cache_before = snapshot(tmp_path / "run"), snapshot(tmp_path / "cache")
    assert "results.csv" in run_before and any(k.startswith("evaluate/") for k in cache_before)

    bad_configs = [
        "name: test\nadapters: [identity\n",
        write_config(tmp_path / "x.yaml", matrix_config(dataset, adapters=["identity", "nope"])).read_text(),
        write_config(tmp_path / "x.yaml", matrix_config(tmp_path / "gone")).read_text(),
        write_config(tmp_path / "x.yaml", matrix_config(dataset, seeds="zero")).read_text(),
    ]
    for text in bad_configs:
        cfg.write_text(text)
        fails_with(capsys, run_args(cfg, tmp_path), str(cfg))
        assert snapshot(tmp_path / "run") == run_before
        assert snapshot(tmp_path / "cache") == cache_before


def _write(path: Path, shape=(8, 8), value=100) -> None:
    import cv2
    import numpy as np

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full(shape, value, np.uint8))


def test_data_prepare_images_prints_the_pool_and_names_a_corrupt_file(tmp_path, capsys):
    _write(tmp_path / "in" / "a.png", (8, 12))
    _write(tmp_path / "in" / "cam 2" / "b.jpg", (20, 10, 3), 40)
    assert main(["data", "prepare", "images", str(tmp_path / "in"), "--out", str(tmp_path / "pool"), "--quiet"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["split", "images", "width", "height", "channels", "folder"]
    assert lines[2].split() == ["pool", "2", "10-12", "8-20", "1-channel:", "2",
                                str(tmp_path / "pool" / "images" / "pool")]
    assert lines[3].startswith(f"unlabelled pool -> {tmp_path / 'pool'}")
    assert (tmp_path / "pool" / "images" / "pool" / "cam_2" / "b.png").is_file()
    (tmp_path / "in" / "cam 2" / "c.png").write_bytes(b"garbage")
    fails_with(capsys, ["data", "prepare", "images", str(tmp_path / "in"), "--out", str(tmp_path / "p2"), "--quiet"],
               str(tmp_path / "in" / "cam 2" / "c.png"), "not a readable image")
    fails_with(capsys, ["data", "prepare", "images", str(tmp_path / "in"), "--out", str(tmp_path / "p3"),
                        "--test-fraction", "0.5"], "--test-fraction does not apply to an unlabelled pool")


def test_data_prepare_coco_without_annotations_makes_a_pool(tmp_path, capsys):
    import json

    _write(tmp_path / "images" / "x.png", (4, 6))
    (tmp_path / "coco.json").write_text('{"images": [{"id": 1, "file_name": "x.png", "width": 6, "height": 4}], '
                                        '"annotations": []}')
    assert main(["data", "prepare", "coco", str(tmp_path / "coco.json"), str(tmp_path / "images"),
                 "--out", str(tmp_path / "pool"), "--quiet", "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["kind"] == "pool" and printed["splits"]["pool"]["images"] == 1


def test_test_only_dataset_prepares_and_refuses_training(fake_env, tmp_path, capsys):
    for i in range(4):
        _write(tmp_path / "img" / f"p{i}.png", value=20 * i)
        _write(tmp_path / "msk" / f"p{i}.png", value=1)
    argv = ["data", "prepare", "masks", str(tmp_path / "img"), str(tmp_path / "msk"), "--classes", "dent", "--quiet"]
    fails_with(capsys, [*argv, "--test-fraction", "1", "--val-fraction", "0.2", "--out", str(tmp_path / "bad")],
               "--test-fraction 1", "--val-fraction 0.2")
    assert main([*argv, "--test-fraction", "1", "--out", str(tmp_path / "target")]) == 0
    out = capsys.readouterr().out
    assert "test only: no train.json or val.json" in out and "\ntrain " not in out
    fails_with(capsys, ["train", "segmenter", "threshold", "--data", str(tmp_path / "target"), "--profile", "tiny",
                        "--out", str(tmp_path / "model")], str(tmp_path / "target" / "train.json"), "test only")
