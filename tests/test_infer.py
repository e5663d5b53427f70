"""`harness infer`: image -> adapter -> segmenter, one overlay PNG and one COCO JSON per image."""
from __future__ import annotations

import json
import shutil

import cv2
import pytest

from harness.cli import main


@pytest.fixture
def model(dataset, tmp_path, fake_env):
    out = tmp_path / "model"
    assert main(["train", "segmenter", "threshold", "--data", str(dataset), "--profile", "tiny", "--out", str(out)]) == 0
    (out / "classes.json").write_text(json.dumps(["inclusion", "patches", "scratches"]))
    return out


def test_infer_writes_overlay_and_coco_json_per_image(dataset, model, tmp_path, fake_env, capsys):
    images = sorted((dataset / "images" / "test").iterdir())[:3]
    out = tmp_path / "out"
    assert main(["infer", *map(str, images), "--adapter", "smooth", "--segmenter", "threshold",
                 "--checkpoint", str(model / "model.json"), "--out", str(out), "--quiet"]) == 0
    for path in images:
        overlay = cv2.imread(str(out / f"{path.stem}.png"))
        assert overlay is not None and overlay.shape[0] > 100
        coco = json.loads((out / f"{path.stem}.json").read_text())
        assert coco["images"][0]["file_name"] == str(path.resolve())
        assert [c["name"] for c in coco["categories"]] == ["inclusion", "patches", "scratches"]
        assert coco["info"]["adapter"]["name"] == "smooth"
        for ann in coco["annotations"]:
            assert ann["image_id"] == coco["images"][0]["id"] and "segmentation" in ann and 0 <= ann["score"] <= 1
    assert "3 image(s): smooth -> threshold" in capsys.readouterr().out


def test_infer_equals_the_predict_stage_on_the_same_images(dataset, model, tmp_path, fake_env):
    """The pipeline must be what a matrix cell measures: same adapter + segmenter -> same detections."""
    images = sorted((dataset / "images" / "test").iterdir())[:2]
    adapted = tmp_path / "adapted"
    adapted.mkdir()
    for p in images:
        shutil.copy(p, adapted / p.name)
    assert main(["adapt", "smooth", str(adapted), str(tmp_path / "smoothed"), "--quiet"]) == 0
    assert main(["infer", *map(str, images), "--adapter", "smooth", "--segmenter", "threshold",
                 "--checkpoint", str(model), "--out", str(tmp_path / "a"), "--quiet"]) == 0
    assert main(["infer", *(str(tmp_path / "smoothed" / p.name) for p in images), "--segmenter", "threshold",
                 "--checkpoint", str(model), "--out", str(tmp_path / "b"), "--quiet"]) == 0
    for p in images:
        a = json.loads((tmp_path / "a" / f"{p.stem}.json").read_text())["annotations"]
        b = json.loads((tmp_path / "b" / f"{p.stem}.json").read_text())["annotations"]
        assert [(x["bbox"], x["score"]) for x in a] == [(x["bbox"], x["score"]) for x in b]


@pytest.mark.parametrize("args, message", [
    (["--checkpoint", "NOPE"], "checkpoint not found"),
    (["--adapter", "dncnn"], "trainable: give --fit"),
    (["--adapter", "no-such-adapter"], "no-such-adapter"),
])
def test_infer_bad_input_is_one_clear_line(dataset, model, tmp_path, fake_env, capsys, args, message):
    image = next((dataset / "images" / "test").iterdir())
    base = {"--checkpoint": str(model), "--adapter": "identity"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = str(tmp_path / value) if value == "NOPE" else value
    argv = ["infer", str(image), "--segmenter", "threshold", "--out", str(tmp_path / "o"), "--quiet"]
    for flag, value in base.items():
        argv += [flag, value]
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_infer_names_a_corrupt_image(model, tmp_path, fake_env, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    assert main(["infer", str(bad), "--segmenter", "threshold", "--checkpoint", str(model),
                 "--out", str(tmp_path / "o"), "--quiet"]) == 2
    assert str(bad) in capsys.readouterr().err
