"""Dataset layer: lossless conversion, splits, resizing, input errors, COCO import, synthetic data."""
from __future__ import annotations

import json
import re
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils

from harness.data.coco import dataset_fingerprint, decode_segmentation, image_records, load_coco, mask_to_annotation
from harness.data.masks import class_map_instances, prepare_masks
from harness.data.neu_seg import prepare_neu_seg
from harness.data.roboflow import find_roboflow_splits, prepare_coco
from harness.data.stats import laplacian_variance, normalize_v_mean
from harness.data.synthetic import generate_synthetic, render_image
from harness.errors import HarnessError
from harness.hashing import seed_from


def handmade_map() -> np.ndarray:
    """Two separate inclusion blobs and one scratch: three instances."""
    m = np.zeros((24, 32), np.uint8)
    m[2:5, 2:6] = 1
    m[15:19, 20:25] = 1
    m[10, 3:30] = 3
    return m


def rebuild(rec: dict) -> np.ndarray:
    out = np.zeros((rec["height"], rec["width"]), np.uint8)
    for ann in rec["annotations"]:
        out[decode_segmentation(ann["segmentation"]).astype(bool)] = ann["category_id"]
    return out


def write_neu_release(root: Path, train: dict[str, np.ndarray], test: dict[str, np.ndarray]) -> None:
    rng = np.random.default_rng(1)
    for part, maps in (("training", train), ("test", test)):
        (root / "images" / part).mkdir(parents=True)
        (root / "annotations" / part).mkdir(parents=True)
        for stem, m in maps.items():
            img = rng.integers(60, 160, m.shape, dtype=np.uint8)
            cv2.imwrite(str(root / "images" / part / f"{stem}.jpg"), cv2.cvtColor(img, cv2.COLOR_GRAY2BGR))
            cv2.imwrite(str(root / "annotations" / part / f"{stem}.png"), m)


def test_class_map_instances_are_components_and_lossless():
    m = handmade_map()
    instances = class_map_instances(m, 3)
    assert sorted(c for c, _ in instances) == [1, 1, 3]
    for cls in (1, 2, 3):
        union = np.zeros_like(m, bool)
        for c, mask in instances:
            if c == cls:
                ann = mask_to_annotation(mask, 1, c, 1)
                union |= decode_segmentation(ann["segmentation"]).astype(bool)
        assert np.array_equal(union, m == cls)


def test_mask_to_annotation_fields():
    mask = np.zeros((10, 12), np.uint8)
    mask[2:5, 3:9] = 1
    ann = mask_to_annotation(mask, 7, 2, 5)
    assert ann["bbox"] == [3.0, 2.0, 6.0, 3.0] and ann["area"] == 18 and ann["iscrowd"] == 0
    assert ann["segmentation"]["size"] == [10, 12] and isinstance(ann["segmentation"]["counts"], str)
    assert (ann["id"], ann["image_id"], ann["category_id"]) == (5, 7, 2)


@pytest.fixture
def neu_root(tmp_path: Path) -> Path:
    m = handmade_map()
    other = np.zeros_like(m)
    other[5:20, 8:20] = 2
    root = tmp_path / "neu"
    write_neu_release(root, {"000003": m, "000001": other, "000002": m.copy(), "000004": other.copy()},
                      {"000010": m})
    return root


def test_prepare_neu_seg_counts_layout_and_lossless(neu_root: Path, tmp_path: Path):
    meta = prepare_neu_seg(neu_root, tmp_path / "out", val_fraction=0.25, progress=False)
    s = meta["splits"]
    assert (s["train"]["images"], s["val"]["images"], s["test"]["images"]) == (3, 1, 1)
    assert s["test"]["instances"] == {"inclusion": 2, "patches": 0, "scratches": 1}
    total = {k: s["train"]["instances"][k] + s["val"]["instances"][k] for k in s["test"]["instances"]}
    assert total == {"inclusion": 4, "patches": 2, "scratches": 2}
    on_disk = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert on_disk == meta and meta["v_mean_normalisation"] == 108.0
    test = load_coco(tmp_path / "out" / "test.json")
    assert test["images"] == [{"id": 1, "file_name": "images/test/000010.png", "width": 32, "height": 24}]
    assert [c["name"] for c in test["categories"]] == ["inclusion", "patches", "scratches"]
    for split, part in (("train", "training"), ("val", "training"), ("test", "test")):
        for rec in image_records(tmp_path / "out", split):
            img = cv2.imread(str(rec["path"]), cv2.IMREAD_UNCHANGED)
            assert img.ndim == 2 and abs(img.mean() - 108) < 1
            source = cv2.imread(str(neu_root / "annotations" / part / Path(rec["file_name"]).name), 0)
            assert np.array_equal(rebuild(rec), source)
    train_ids = [r["id"] for r in image_records(tmp_path / "out", "train")]
    assert train_ids == [1, 2, 3]


def test_val_split_deterministic_by_seed(neu_root: Path, tmp_path: Path):
    def val_names(seed: int, name: str) -> list[str]:
        prepare_neu_seg(neu_root, tmp_path / name, val_fraction=0.5, seed=seed, v_mean=None, progress=False)
        return [r["file_name"] for r in image_records(tmp_path / name, "val")]

    assert val_names(0, "a") == val_names(0, "b")
    assert len({tuple(val_names(s, f"s{s}")) for s in range(6)}) > 1
    assert dataset_fingerprint(tmp_path / "a") == dataset_fingerprint(tmp_path / "b")


def test_size_scales_and_stays_lossless(neu_root: Path, tmp_path: Path):
    prepare_neu_seg(neu_root, tmp_path / "small", size=16, val_fraction=0.25, progress=False)
    prepare_neu_seg(neu_root, tmp_path / "big", size=64, val_fraction=0.25, progress=False)
    for name, size, scale in (("small", 16, 0.5), ("big", 64, 2.0)):
        rec = image_records(tmp_path / name, "test")[0]
        assert (rec["width"], rec["height"]) == (size, size * 24 // 32)
        source = cv2.imread(str(neu_root / "annotations" / "test" / "000010.png"), 0)
        resized = cv2.resize(source, (rec["width"], rec["height"]), interpolation=cv2.INTER_NEAREST)
        assert np.array_equal(rebuild(rec), resized)
        for ann in rec["annotations"]:
            assert ann["area"] == int(decode_segmentation(ann["segmentation"]).sum())
    big = image_records(tmp_path / "big", "test")[0]["annotations"]
    blob = next(a for a in big if a["category_id"] == 1 and a["bbox"][0] < 10)
    assert blob["bbox"] == [4.0, 4.0, 8.0, 6.0]  # 4x3 blob at (2, 2), doubled


def test_rerun_refuses_foreign_folder(neu_root: Path, tmp_path: Path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(HarnessError, match="notes.txt"):
        prepare_neu_seg(neu_root, out, progress=False)
    (out / "notes.txt").unlink()
    prepare_neu_seg(neu_root, out, progress=False)
    prepare_neu_seg(neu_root, out, val_fraction=0.5, progress=False)  # a prepared folder may be rebuilt
    assert len(list((out / "images" / "train").iterdir())) == 2


@pytest.mark.parametrize("damage, pattern", [
    ("corrupt", "000002.jpg"),
    ("size", r"000002.png: mask is 10x10 but image"),
    ("class", r"000002.png: unknown class id 7"),
    ("missing", r"000002.jpg: no annotation"),
])
def test_bad_neu_inputs_name_the_file(neu_root: Path, tmp_path: Path, damage: str, pattern: str):
    img = neu_root / "images" / "training" / "000002.jpg"
    ann = neu_root / "annotations" / "training" / "000002.png"
    if damage == "corrupt":
        img.write_bytes(b"not a jpeg")
    elif damage == "size":
        cv2.imwrite(str(ann), np.zeros((10, 10), np.uint8))
    elif damage == "class":
        m = handmade_map()
        m[0, 0] = 7
        cv2.imwrite(str(ann), m)
    else:
        ann.unlink()
    with pytest.raises(HarnessError, match=pattern):
        prepare_neu_seg(neu_root, tmp_path / "out", progress=False)


def test_prepare_masks_generic_folder(tmp_path: Path):
    (tmp_path / "img").mkdir()
    (tmp_path / "msk").mkdir()
    for i in range(10):
        cv2.imwrite(str(tmp_path / "img" / f"p{i}.png"), np.full((8, 8, 3), (10, 80, 200), np.uint8))
        m = np.zeros((8, 8), np.uint8)
        m[1:3, 1:3] = 1 + i % 2
        cv2.imwrite(str(tmp_path / "msk" / f"p{i}.png"), m)
    meta = prepare_masks(tmp_path / "img", tmp_path / "msk", ["dent", "rust"], tmp_path / "out", progress=False)
    assert [meta["splits"][s]["images"] for s in ("train", "val", "test")] == [7, 1, 2]
    assert sum(meta["splits"][s]["instances"]["rust"] for s in ("train", "val", "test")) == 5
    rec = image_records(tmp_path / "out", "train")[0]
    assert cv2.imread(str(rec["path"]), cv2.IMREAD_UNCHANGED).shape == (8, 8, 3)


def write_coco(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(obj if isinstance(obj, str) else json.dumps(obj))


def roboflow_export(root: Path) -> None:
    cats = [{"id": 0, "name": "defects", "supercategory": "none"},
            {"id": 1, "name": "crack", "supercategory": "defects"},
            {"id": 2, "name": "pit", "supercategory": "defects"}]
    for folder, n in (("train", 10), ("test", 2)):
        images, anns = [], []
        (root / folder).mkdir(parents=True)
        for i in range(n):
            name = f"img{i}_jpg.rf.abc{i}.jpg"
            cv2.imwrite(str(root / folder / name), np.full((20, 30), 90, np.uint8))
            images.append({"id": i, "file_name": name, "width": 30, "height": 20})
            anns.append({"id": 2 * i, "image_id": i, "category_id": 1, "iscrowd": 0,
                         "segmentation": [[2, 2, 12, 2, 12, 8, 2, 8]], "bbox": [2, 2, 10, 6], "area": 60})
            pit = np.zeros((20, 30), np.uint8)
            pit[12:16, 20:26] = 1
            rle = mask_utils.encode(np.asfortranarray(pit))
            rle["counts"] = rle["counts"].decode()
            anns.append({"id": 2 * i + 1, "image_id": i, "category_id": 2, "iscrowd": 0, "segmentation": rle})
        write_coco(root / folder / "_annotations.coco.json",
                   {"images": images, "annotations": anns, "categories": cats})


def test_roboflow_import_polygon_rle_and_placeholder(tmp_path: Path):
    roboflow_export(tmp_path / "rf")
    sources = find_roboflow_splits(tmp_path / "rf")
    assert set(sources) == {"train", "test"}
    meta = prepare_coco(sources, tmp_path / "out", val_fraction=0.2, progress=False)
    assert meta["classes"] == ["crack", "pit"] and meta["import"]["dropped_categories"] == ["defects"]
    assert [meta["splits"][s]["images"] for s in ("train", "val", "test")] == [8, 2, 2]
    test = load_coco(tmp_path / "out" / "test.json")
    assert test["categories"] == [{"id": 1, "name": "crack"}, {"id": 2, "name": "pit"}]
    rec = image_records(tmp_path / "out", "test")[0]
    assert rec["file_name"] == "images/test/img0_jpg.rf.abc0.png"
    by_cat = {a["category_id"]: a for a in rec["annotations"]}
    crack = decode_segmentation(by_cat[1]["segmentation"])
    assert crack[3:8, 3:12].all() and not crack[12:, :].any()
    assert by_cat[2]["area"] == 24 and by_cat[2]["bbox"] == [20.0, 12.0, 6.0, 4.0]
    assert meta["splits"]["test"]["instances"] == {"crack": 2, "pit": 2}


def test_roboflow_size_resizes_instances(tmp_path: Path):
    roboflow_export(tmp_path / "rf")
    prepare_coco(find_roboflow_splits(tmp_path / "rf"), tmp_path / "out", size=60, progress=False)
    rec = image_records(tmp_path / "out", "test")[0]
    pit = next(a for a in rec["annotations"] if a["category_id"] == 2)
    assert (rec["width"], rec["height"]) == (60, 40) and pit["bbox"] == [40.0, 24.0, 12.0, 8.0]


@pytest.mark.parametrize("content, pattern", [
    ("{not json", r"x\.json: malformed JSON"),
    ({"images": [], "annotations": []}, r"x\.json: missing key 'categories'"),
    ({"images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4}],
      "annotations": [{"id": 12, "category_id": 1, "segmentation": []}],
      "categories": [{"id": 1, "name": "a"}]}, r"x\.json: annotation 12 has no 'image_id'"),
    ({"images": [{"id": 1, "file_name": "a.png", "width": 4, "height": 4}],
      "annotations": [{"id": 3, "image_id": 9, "category_id": 1, "segmentation": []}],
      "categories": [{"id": 1, "name": "a"}]}, r"x\.json: annotation 3 refers to unknown image_id 9"),
])
def test_malformed_coco_names_file_and_key(tmp_path: Path, content, pattern: str):
    write_coco(tmp_path / "x.json", content)
    with pytest.raises(HarnessError, match=pattern):
        load_coco(tmp_path / "x.json")


def test_bad_polygon_names_annotation(tmp_path: Path):
    roboflow_export(tmp_path / "rf")
    path = tmp_path / "rf" / "train" / "_annotations.coco.json"
    data = json.loads(path.read_text())
    data["annotations"][0]["segmentation"] = [[1, 2, 3]]
    path.write_text(json.dumps(data))
    with pytest.raises(HarnessError, match="_annotations.coco.json: annotation 0"):
        prepare_coco(find_roboflow_splits(tmp_path / "rf"), tmp_path / "out", progress=False)


def test_synthetic_is_deterministic_and_lossless(tmp_path: Path):
    args = dict(n_train=6, n_val=2, n_test=2, size=64, progress=False)
    meta = generate_synthetic(tmp_path / "a", seed=3, **args)
    generate_synthetic(tmp_path / "b", seed=3, **args)
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    assert files_a == files_b and len(files_a) == 4 + 10
    assert all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files_a)
    assert sum(sum(s["instances"].values()) for s in meta["splits"].values()) >= 10
    for split in ("train", "val", "test"):
        for rec in image_records(tmp_path / "a", split):
            masks = [decode_segmentation(a["segmentation"]).astype(bool) for a in rec["annotations"]]
            assert all(m.sum() >= 12 for m in masks)
            source = cv2.imread(str(rec["path"]), cv2.IMREAD_UNCHANGED)
            assert source.ndim == 2 and 90 < source.mean() < 125
            rng = np.random.default_rng(seed_from("synthetic", 3, split, int(Path(rec["file_name"]).stem)))
            image, class_map = render_image(rng, 64)
            assert np.array_equal(rebuild(rec), class_map) and np.array_equal(image, source)
    generate_synthetic(tmp_path / "c", seed=4, **args)
    assert dataset_fingerprint(tmp_path / "a") != dataset_fingerprint(tmp_path / "c")


def test_stats_normalisation_and_sharpness():
    gray = np.full((10, 10), 54, np.uint8)
    assert normalize_v_mean(gray, 108.0).mean() == 108
    color = np.zeros((4, 4, 3), np.uint8)
    color[..., 2] = 50
    color[..., 0] = 25
    out = normalize_v_mean(color, 100.0)
    assert out[..., 2].mean() == 100 and out[..., 0].mean() == 50
    flat = np.full((16, 16), 100, np.uint8)
    checker = (np.indices((16, 16)).sum(0) % 2 * 255).astype(np.uint8)
    assert laplacian_variance(flat) == 0 < laplacian_variance(checker)


def write_secret(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((20, 30), 200, np.uint8))
    return path


def point_image_at(root: Path, file_name: str) -> Path:
    """Make image 0 of the Roboflow train split refer to ``file_name``; returns its JSON."""
    path = root / "train" / "_annotations.coco.json"
    data = json.loads(path.read_text())
    data["images"][0]["file_name"] = file_name
    path.write_text(json.dumps(data))
    return path


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_coco_file_name_outside_the_image_folder_is_refused(tmp_path: Path, how: str):
    roboflow_export(tmp_path / "rf")
    secret = write_secret(tmp_path / "secret.png")
    if how == "dotdot":
        file_name = "../../secret.png"
    elif how == "absolute":
        file_name = str(secret)
    else:
        file_name = "img0_jpg.rf.abc0.jpg"
        (tmp_path / "rf" / "train" / file_name).unlink()
        (tmp_path / "rf" / "train" / file_name).symlink_to(secret)
    json_path = point_image_at(tmp_path / "rf", file_name)
    with pytest.raises(HarnessError) as err:
        prepare_coco(find_roboflow_splits(tmp_path / "rf"), tmp_path / "out", progress=False)
    message = str(err.value)
    assert "\n" not in message and str(json_path) in message and f"'{file_name}'" in message
    assert "outside the image folder" in message and str(secret) in message
    assert not (tmp_path / "out").exists()


def test_coco_file_name_may_use_subfolders_and_links_inside_the_root(tmp_path: Path):
    roboflow_export(tmp_path / "rf")
    train = tmp_path / "rf" / "train"
    (train / "sub").mkdir()
    (train / "img0_jpg.rf.abc0.jpg").rename(train / "sub" / "real.jpg")
    (train / "sub" / "link.jpg").symlink_to(train / "sub" / "real.jpg")
    point_image_at(tmp_path / "rf", "sub/../sub/link.jpg")
    meta = prepare_coco(find_roboflow_splits(tmp_path / "rf"), tmp_path / "out", progress=False)
    assert sum(meta["splits"][s]["images"] for s in ("train", "val", "test")) == 12


def test_coco_file_name_must_be_a_string(tmp_path: Path):
    roboflow_export(tmp_path / "rf")
    json_path = point_image_at(tmp_path / "rf", 7)
    with pytest.raises(HarnessError, match=re.escape(f"{json_path}: image 0 file_name must be a non-empty string")):
        prepare_coco(find_roboflow_splits(tmp_path / "rf"), tmp_path / "out", progress=False)


def mask_folders(root: Path, n: int = 10) -> tuple[Path, Path]:
    (root / "img").mkdir(parents=True)
    (root / "msk").mkdir()
    for i in range(n):
        cv2.imwrite(str(root / "img" / f"p{i}.png"), np.full((8, 8), 100, np.uint8))
        m = np.zeros((8, 8), np.uint8)
        m[1:3, 1:3] = 1 + i % 2
        cv2.imwrite(str(root / "msk" / f"p{i}.png"), m)
    return root / "img", root / "msk"


@pytest.mark.parametrize("which", ["img", "msk"])
def test_masks_symlink_out_of_its_folder_is_refused(tmp_path: Path, which: str):
    images, masks = mask_folders(tmp_path)
    secret = write_secret(tmp_path / "elsewhere" / "secret.png")
    link = tmp_path / which / "p3.png"
    if which == "msk":
        cv2.imwrite(str(secret), np.zeros((8, 8), np.uint8))
    link.unlink()
    link.symlink_to(secret)
    with pytest.raises(HarnessError) as err:
        prepare_masks(images, masks, ["dent", "rust"], tmp_path / "out", progress=False)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{link}: ") and str(secret) in message
    assert f"outside {tmp_path / which}" in message and not (tmp_path / "out").exists()


def test_neu_seg_image_symlink_out_of_the_release_is_refused(neu_root: Path, tmp_path: Path):
    link = neu_root / "images" / "test" / "000010.jpg"
    secret = tmp_path / "secret.jpg"
    link.rename(secret)
    link.symlink_to(secret)
    with pytest.raises(HarnessError, match=re.escape(f"{link}: image leads to {secret}, outside")):
        prepare_neu_seg(neu_root, tmp_path / "out", progress=False)


def test_prepare_prints_a_summary_table_and_json_on_request(tmp_path: Path, capsys):
    from harness.cli import main

    images, masks = mask_folders(tmp_path)
    argv = ["data", "prepare", "masks", str(images), str(masks), "--classes", "dent,rust", "--quiet"]
    assert main([*argv, "--out", str(tmp_path / "out")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["split", "images", "instances", "dent", "rust", "folder"]
    splits = json.loads((tmp_path / "out" / "dataset.json").read_text())["splits"]
    assert [line.split() for line in lines[2:5]] == [
        [split, str(s["images"]), str(sum(s["instances"].values())), str(s["instances"]["dent"]),
         str(s["instances"]["rust"]), str(tmp_path / "out" / "images" / split)] for split, s in splits.items()]
    assert [splits[s]["images"] for s in ("train", "val", "test")] == [7, 1, 2]
    assert len(lines) == 6 and str(tmp_path / "out" / "dataset.json") in lines[5]
    assert main([*argv, "--out", str(tmp_path / "out2"), "--json"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == json.loads((tmp_path / "out2" / "dataset.json").read_text())


def test_test_fraction_one_writes_a_test_only_target(tmp_path: Path, capsys):
    from harness.data.coco import load_split
    from harness.data.masks import summary_table

    images, masks = mask_folders(tmp_path)
    meta = prepare_masks(images, masks, ["dent", "rust"], tmp_path / "out", test_fraction=1, progress=False)
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["dataset.json", "images", "test.json"]
    assert list(meta["splits"]) == ["test"] and meta["splits"]["test"]["images"] == 10
    assert meta["absent_splits"] == ["train", "val"] and meta["arguments"]["val_fraction"] == 0.0
    assert len(image_records(out, "test")) == 10
    assert meta["fingerprint"] == dataset_fingerprint(out) == dataset_fingerprint(out, ("test",))
    with pytest.raises(HarnessError) as err:
        load_split(out, "train")
    assert "\n" not in str(err.value) and str(out / "train.json") in str(err.value)
    assert "--test-fraction 1" in str(err.value)
    lines = summary_table(meta, out).splitlines()
    assert lines[2].split()[:3] == ["test", "10", "10"] and len(lines) == 5
    assert "test only: no train.json or val.json" in lines[3]


def test_coco_test_fraction_one_and_fractions_over_one(tmp_path: Path):
    roboflow_export(tmp_path / "rf")
    train = find_roboflow_splits(tmp_path / "rf")["train"]
    meta = prepare_coco({"train": train}, tmp_path / "out", test_fraction=1, progress=False)
    assert list(meta["splits"]) == ["test"] and meta["splits"]["test"]["images"] == 10
    assert meta["absent_splits"] == ["train", "val"] and not (tmp_path / "out" / "train.json").exists()
    with pytest.raises(HarnessError, match=r"test fraction 0.6 \+ val fraction 0.5 is more than 1"):
        prepare_coco({"train": train}, tmp_path / "out2", test_fraction=0.6, val_fraction=0.5, progress=False)


def test_full_dataset_fingerprint_still_covers_the_three_splits(tmp_path: Path):
    images, masks = mask_folders(tmp_path)
    meta = prepare_masks(images, masks, ["dent", "rust"], tmp_path / "out", progress=False)
    assert "absent_splits" not in meta and meta["kind"] == "labelled"
    assert dataset_fingerprint(tmp_path / "out") == dataset_fingerprint(tmp_path / "out", ("train", "val", "test"))
    assert meta["fingerprint"] == dataset_fingerprint(tmp_path / "out")
    assert sorted(meta["sha256"]) == sorted(r["file_name"] for s in ("train", "val", "test")
                                            for r in image_records(tmp_path / "out", s))


def pool_folder(root: Path) -> Path:
    (root / "sub dir" / "deeper").mkdir(parents=True)
    (root / ".hidden").mkdir()
    cv2.imwrite(str(root / "a.png"), np.full((20, 30), 90, np.uint8))
    cv2.imwrite(str(root / "A.jpg"), np.full((40, 10, 3), (10, 90, 200), np.uint8))
    cv2.imwrite(str(root / "sub dir" / "b é.png"), np.full((16, 16, 3), 50, np.uint8))  # equal channels
    cv2.imwrite(str(root / "sub dir" / "deeper" / "c.tif"), np.full((5, 7), 4000, np.uint16))
    cv2.imwrite(str(root / ".hidden" / "x.png"), np.zeros((5, 7), np.uint8))
    (root / "notes.txt").write_text("not an image")
    return root


def test_prepare_images_nested_safe_unique_names_and_channels(tmp_path: Path):
    from harness.data.content import pixel_sha256
    from harness.data.pool import prepare_images

    meta = prepare_images(pool_folder(tmp_path / "in"), tmp_path / "pool", progress=False)
    out = tmp_path / "pool"
    recs = image_records(out, "pool")
    assert [(r["file_name"], r["original"]) for r in recs] == [
        ("images/pool/A.png", "A.jpg"), ("images/pool/a-2.png", "a.png"),
        ("images/pool/sub_dir/b_.png", "sub dir/b é.png"),
        ("images/pool/sub_dir/deeper/c.png", "sub dir/deeper/c.tif")]
    assert json.loads((out / "pool.json").read_text())["annotations"] == []
    assert meta["kind"] == "pool" and meta["splits"]["pool"]["images"] == 4 and meta["classes"] == []
    assert meta["channels"] == {"1": 3, "3": 1} and "kept as read" in meta["channel_policy"]
    assert meta["size_range"] == {"width": [7, 30], "height": [5, 40]}
    assert meta["fingerprint"] == dataset_fingerprint(out)
    assert cv2.imread(str(out / "images/pool/A.png"), cv2.IMREAD_UNCHANGED).shape == (40, 10, 3)
    assert cv2.imread(str(out / "images/pool/sub_dir/deeper/c.png"), cv2.IMREAD_UNCHANGED).max() == 4000 >> 8
    for r in recs:
        assert meta["sha256"][r["file_name"]] == pixel_sha256(cv2.imread(str(r["path"]), cv2.IMREAD_UNCHANGED))
    small = prepare_images(tmp_path / "in", tmp_path / "small", size=8, progress=False)
    assert small["size_range"] == {"width": [2, 8], "height": [5, 8]}


def test_prepare_images_bad_input_is_one_line_naming_the_file(tmp_path: Path):
    from harness.data.pool import prepare_images

    folder = pool_folder(tmp_path / "in")
    (folder / "sub dir" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.raises(HarnessError, match=re.escape(f"{folder / 'sub dir' / 'broken.png'}: not a readable image")):
        prepare_images(folder, tmp_path / "partial", progress=False)
    assert not (tmp_path / "partial" / "dataset.json").exists()  # the mark of a complete dataset
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(HarnessError, match=re.escape(f"{tmp_path / 'empty'}: no images")):
        prepare_images(tmp_path / "empty", tmp_path / "out", progress=False)
    secret = write_secret(tmp_path / "elsewhere" / "secret.png")
    (folder / "sub dir" / "broken.png").unlink()
    (folder / "link.png").symlink_to(secret)
    with pytest.raises(HarnessError, match=re.escape(f"{folder / 'link.png'}: image leads to {secret}, outside")):
        prepare_images(folder, tmp_path / "out", progress=False)
    (folder / "link.png").unlink()
    (folder / "linked").symlink_to(secret.parent, target_is_directory=True)
    with pytest.raises(HarnessError, match=re.escape(f"{folder / 'linked'}: folder leads to {secret.parent}")):
        prepare_images(folder, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("annotations", ["missing", "empty"])
def test_coco_without_annotations_is_a_pool(tmp_path: Path, annotations: str):
    roboflow_export(tmp_path / "rf")
    json_path, image_dir = find_roboflow_splits(tmp_path / "rf")["train"]
    data = json.loads(json_path.read_text())
    if annotations == "missing":
        del data["annotations"], data["categories"]
    else:
        data["annotations"] = []
    json_path.write_text(json.dumps(data))
    meta = prepare_coco({"train": (json_path, image_dir)}, tmp_path / "out", progress=False)
    assert meta["kind"] == "pool" and meta["splits"]["pool"]["images"] == 10
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["dataset.json", "images", "pool.json"]
    assert [r["original"] for r in image_records(tmp_path / "out", "pool")][:2] == [
        "img0_jpg.rf.abc0.jpg", "img1_jpg.rf.abc1.jpg"]


def test_pool_overlap_finds_the_same_pixels_in_another_encoding(tmp_path: Path):
    from harness.data.content import pool_overlap
    from harness.data.pool import prepare_images

    images, masks = mask_folders(tmp_path)
    for i in range(10):  # distinct contents
        cv2.imwrite(str(images / f"p{i}.png"), np.full((8, 8), 10 * i, np.uint8))
    prepare_masks(images, masks, ["dent", "rust"], tmp_path / "data", progress=False)
    test = image_records(tmp_path / "data", "test")
    (tmp_path / "pool_in").mkdir()
    leaked = cv2.imread(str(test[0]["path"]), cv2.IMREAD_UNCHANGED)
    cv2.imwrite(str(tmp_path / "pool_in" / "leak.png"), cv2.cvtColor(leaked, cv2.COLOR_GRAY2BGR),
                [cv2.IMWRITE_PNG_COMPRESSION, 0])  # other bytes, other channel count, same pixels
    cv2.imwrite(str(tmp_path / "pool_in" / "fresh.png"), np.full((8, 8), 255, np.uint8))
    prepare_images(tmp_path / "pool_in", tmp_path / "pool", progress=False)
    expected = [(tmp_path / "pool" / "images" / "pool" / "leak.png", test[0]["path"])]
    assert [(p.resolve(), q) for p, q in pool_overlap(tmp_path / "pool", tmp_path / "data", "test")] == [
        (p.resolve(), q) for p, q in expected]
    assert pool_overlap(tmp_path / "pool", tmp_path / "data", "val") == []
    meta = json.loads((tmp_path / "pool" / "dataset.json").read_text())
    del meta["sha256"]  # a folder prepared before hashes were recorded: hashed from its files
    (tmp_path / "pool" / "dataset.json").write_text(json.dumps(meta))
    assert len(pool_overlap(tmp_path / "pool", tmp_path / "data", "test")) == 1
