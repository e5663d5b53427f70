"""scripts/second_camera.py, the real-style target of leaderboards/neu-seg-targets-cpu.md: on a tiny fake NEU-Seg
release, its export is a COCO folder `harness data prepare coco` imports, the masks follow the crop and resize
exactly, the images differ by the operations it names (and by nothing the twin family would explain), and two
runs are byte-identical."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from harness.cli import main as harness
from harness.data.coco import decode_segmentation, load_coco
from harness.data.content import pool_overlap
from harness.estimate import jpeg_file_quality

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("second_camera", ROOT / "scripts" / "second_camera.py")
cam = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(cam)

N = 64
COUNTS = {"training": 6, "test": 2}


def _class_map(i: int) -> np.ndarray:
    m = np.zeros((N, N), np.uint8)
    m[8 + i:24 + i, 10:30] = 1                  # inclusion: a block that moves with i
    m[40:44, 5:60] = 3                          # scratches: a thin line
    if i % 2:
        m[30:36, 40 + i:50 + i] = 2             # patches on every other image
    return m


@pytest.fixture
def release(tmp_path: Path) -> Path:
    root = tmp_path / "neu"
    for part, n in COUNTS.items():
        (root / "images" / part).mkdir(parents=True)
        (root / "annotations" / part).mkdir(parents=True)
        for i in range(n):
            stem = f"{part[:2]}{i:03d}"
            m = _class_map(i)
            image = np.where(m > 0, 180, 90).astype(np.uint8)
            cv2.imwrite(str(root / "images" / part / f"{stem}.jpg"), cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
            cv2.imwrite(str(root / "annotations" / part / f"{stem}.png"), m)
    return root


def _expected_class_map(m: np.ndarray) -> np.ndarray:
    """Nearest-neighbour resample of the central CROP square to SIZE px, written out independently."""
    side = cam.CROP * N
    src = (np.arange(cam.SIZE) + 0.5) * side / cam.SIZE + (N - side) / 2    # pixel-centre coordinates
    idx = np.clip(np.floor(src).astype(int), 0, N - 1)
    return m[np.ix_(idx, idx)]


def _export(release: Path, out: Path, *args: str) -> dict:
    assert cam.main([str(release), "--out", str(out), *args]) == 0
    return {split: load_coco(out / split / cam.ANNOTATIONS) for split in ("train", "test")}


def test_export_is_coco_and_masks_follow_the_resize(release, tmp_path):
    cocos = _export(release, tmp_path / "out")
    assert [c["name"] for c in cocos["train"]["categories"]] == ["inclusion", "patches", "scratches"]
    assert {s: len(c["images"]) for s, c in cocos.items()} == {"train": 6, "test": 2}
    for split, coco in cocos.items():
        part = "training" if split == "train" else "test"
        for im in coco["images"]:
            i = int(Path(im["file_name"]).stem[2:])
            picture = cv2.imread(str(tmp_path / "out" / split / im["file_name"]), cv2.IMREAD_UNCHANGED)
            assert picture.shape == (cam.SIZE, cam.SIZE) == (im["height"], im["width"])
            got = np.zeros((cam.SIZE, cam.SIZE), np.uint8)
            anns = [a for a in coco["annotations"] if a["image_id"] == im["id"]]
            for a in anns:
                mask = decode_segmentation(a["segmentation"]).astype(bool)
                assert not (got[mask]).any(), "instances overlap"
                got[mask] = a["category_id"]
            want = _expected_class_map(_class_map(i))
            assert np.array_equal(got, want), (part, im["file_name"])
            assert len(anns) == sum(cv2.connectedComponents((want == c).astype(np.uint8), connectivity=8)[0] - 1
                                    for c in (1, 2, 3) if (want == c).any())
            # the picture's bright defects sit where the masks say
            assert picture[want > 0].mean() > picture[want == 0].mean() + 40


def test_images_differ_by_the_intended_operations(release, tmp_path):
    _export(release, tmp_path / "out")
    assert jpeg_file_quality(tmp_path / "out" / "test" / "te000.jpg") == cam.JPEG_QUALITY
    source = cv2.imread(str(release / "images" / "test" / "te000.jpg"), cv2.IMREAD_GRAYSCALE).astype(np.float64)
    picture = cv2.imread(str(tmp_path / "out" / "test" / "te000.jpg"), cv2.IMREAD_UNCHANGED).astype(np.float64)
    centre, corner = picture[110:146, 110:146], picture[:16, :16]      # both background (90) in the source
    assert source[26:38, 26:38].std() < 1 and abs(source[26:38, 26:38].mean() - 90) < 2
    assert centre.mean() > 98, "gamma brightens the mid-tones"
    assert corner.mean() < 0.85 * centre.mean(), "vignetting"
    assert centre.std() > 4, "sensor noise"
    rng = lambda: np.random.default_rng(0)  # noqa: E731
    empty = np.zeros((200, 200), np.uint8)

    flat, _ = cam.capture(np.full((200, 200), 128, np.uint8), empty, rng())
    corners = np.mean([flat[:16, :16].mean(), flat[:16, -16:].mean(), flat[-16:, :16].mean(), flat[-16:, -16:].mean()])
    assert corners < 0.85 * flat[120:136, 120:136].mean(), "vignetting: corners darker than the centre"

    gain = cam.illumination((256, 256), rng())
    assert gain.max() / gain[gain > 0].min() > 1.3 and not np.allclose(gain, gain.mean())

    def noise(level: float, fn) -> float:
        out = fn(np.full((256, 256), level))
        return float((out - cv2.GaussianBlur(out.astype(np.float64), (0, 0), 4)).std())

    dark, bright = noise(40, lambda x: cam.sensor(x, rng())), noise(200, lambda x: cam.sensor(x, rng()))
    assert bright > 1.8 * dark, "shot noise grows with the signal (additive Gaussian noise would not)"
    dark, bright = (noise(v, lambda x: cam.capture(x.astype(np.uint8), np.zeros(x.shape, np.uint8), rng())[0]
                          .astype(np.float64)) for v in (40, 200))
    assert bright > 1.3 * dark, "after the tone curve too"

    x = np.array([0.0, 64.0, 128.0, 255.0])
    y = cam.tone(x)
    assert y[0] == 0 and y[-1] == 255 and y[2] > 128 + 10
    assert not np.allclose(np.diff(y[:3]), np.diff(y[:3])[0], atol=1), "gamma is not a linear brightness map"


def test_two_runs_are_byte_identical_and_limit_takes_the_first_images(release, tmp_path):
    _export(release, tmp_path / "a")
    _export(release, tmp_path / "b")
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert len(files) == 6 + 2 + 2
    for f in files:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    limited = _export(release, tmp_path / "c", "--limit", "2")
    assert [im["file_name"] for im in limited["train"]["images"]] == ["tr000.jpg", "tr001.jpg"]
    same = tmp_path / "c" / "train" / "tr001.jpg", tmp_path / "a" / "train" / "tr001.jpg"
    assert same[0].read_bytes() == same[1].read_bytes(), "an image does not depend on the others"


def test_harness_prepares_the_export_as_a_labelled_target_and_its_train_images_as_a_pool(release, tmp_path):
    out = tmp_path / "out"
    cocos = _export(release, out)
    assert harness(["data", "prepare", "coco", str(out), "--out", str(tmp_path / "cam2"), "--quiet"]) == 0
    meta = json.loads((tmp_path / "cam2" / "dataset.json").read_text())
    assert meta["kind"] == "labelled" and meta["classes"] == ["inclusion", "patches", "scratches"]
    assert {s: v["images"] for s, v in meta["splits"].items()} == {"train": 5, "val": 1, "test": 2}
    assert sum(meta["splits"]["test"]["instances"].values()) == len(cocos["test"]["annotations"])
    assert harness(["data", "prepare", "images", str(out / "train"), "--out", str(tmp_path / "pool"), "--quiet"]) == 0
    pool = json.loads((tmp_path / "pool" / "dataset.json").read_text())
    assert pool["kind"] == "pool" and pool["splits"]["pool"]["images"] == 6 and pool["channels"] == {"1": 6}
    assert pool_overlap(tmp_path / "pool", tmp_path / "cam2", "test") == []


def test_bad_input_is_one_line(release, tmp_path, capsys):
    assert cam.main([str(tmp_path / "nope"), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope: NEU-Seg release folder not found" in err

    (release / "annotations" / "test" / "te001.png").unlink()
    assert cam.main([str(release), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "te001.jpg: no annotation mask" in err
    assert not (tmp_path / "o").exists(), "nothing is written before the input is checked"

    (release / "annotations" / "training").rename(release / "masks")
    assert cam.main([str(release), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "annotations/training: not found" in err

    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    assert cam.main([str(release), "--out", str(tmp_path / "full")]) == 2
    assert "not an empty folder" in capsys.readouterr().err


def test_a_matrix_plans_the_export_as_a_real_target_with_its_pool_and_oracle(release, tmp_path, registry):
    """The flow the README shows, planned (not run) with the test-double segmenter: the prepared export's
    classes match the prepared source by name, its pool shares no image with the evaluated split, and oracle-T
    finds its labelled train split. The raw export given where a prepared folder belongs is a one-line error."""
    from harness import config, matrix
    from harness.cache import Store
    from harness.errors import HarnessError
    from tests.conftest import matrix_config, write_config

    out = tmp_path / "out"
    _export(release, out)
    assert harness(["data", "prepare", "neu-seg", str(release), "--out", str(tmp_path / "source"), "--quiet"]) == 0
    assert harness(["data", "prepare", "coco", str(out), "--out", str(tmp_path / "cam2"), "--quiet"]) == 0
    assert harness(["data", "prepare", "images", str(out / "train"), "--out", str(tmp_path / "pool"), "--quiet"]) == 0
    segmenters = [{"name": "threshold", "profile": "tiny", "label": "plain"},
                  {"name": "threshold", "profile": "tiny", "label": "tuned", "init": {"segmenter": "plain"},
                   "adapters": ["identity"]},
                  {"name": "threshold", "profile": "tiny", "label": "oracle-T", "init": {"segmenter": "plain"},
                   "train_on": {"target": "cam2", "control": "tuned"}, "adapters": ["identity"]}]

    def plan(**target):
        raw = matrix_config(tmp_path / "source", segmenters=segmenters, adapters=["identity", "meanshift"],
                            degradations=None, targets=[{"name": "domain_b", "severities": [3]},
                                                        {"name": "cam2", **target}])
        del raw["degradations"]
        cfg = config.load(write_config(tmp_path / "m.yaml", raw))
        return matrix.plan(cfg, registry, Store(tmp_path / "cache"), progress=False)

    p = plan(data=str(tmp_path / "cam2"), pool=str(tmp_path / "pool"))
    assert p.targets["cam2"]["evaluated"] == 2 and p.targets["cam2"]["pool"]["images"] == 6
    assert sorted((c.labels["segmenter"], c.labels["adapter"]) for c in p.cells if c.labels["degradation"] == "cam2") \
        == [("oracle-T", "identity"), ("plain", "identity"), ("plain", "meanshift"), ("tuned", "identity")]
    for target, message in (({"data": str(tmp_path / "cam2"), "pool": str(out / "train")}, "pool: .*pool.json"),
                            ({"data": str(out), "pool": str(tmp_path / "pool")}, "test.json: COCO JSON not found")):
        with pytest.raises(HarnessError, match=message) as err:
            plan(**target)
        assert "\n" not in str(err.value) and "targets: 'cam2'" in str(err.value)


def test_a_pool_without_a_readable_image_is_a_one_line_error(tmp_path, capsys):
    """The pool step of the flow, on the folders a user may hand it by mistake."""
    (tmp_path / "json-only").mkdir()
    (tmp_path / "json-only" / cam.ANNOTATIONS).write_text(json.dumps({"images": [], "annotations": []}))
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "000001.jpg").write_bytes(b"\xff\xd8 not a JPEG")
    cases = [(["images", str(tmp_path / "json-only")], "json-only: no images"),
             (["images", str(tmp_path / "corrupt")], "000001.jpg: not a readable image"),
             (["coco", str(tmp_path / "json-only" / cam.ANNOTATIONS), str(tmp_path / "json-only")],
              "no images and no annotations: neither a labelled dataset nor a pool")]
    for i, (args, message) in enumerate(cases):
        assert harness(["data", "prepare", *args, "--out", str(tmp_path / f"pool{i}"), "--quiet"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("harness: error: ") and err.count("\n") == 1 and message in err, err
        assert not (tmp_path / f"pool{i}" / "dataset.json").exists()
