"""The torchvision segmenter end to end on the tiny synthetic set: train -> predict -> evaluate, resume,
weights-only checkpoints, config fingerprints, init from a checkpoint with other classes, and a matrix cell."""
from __future__ import annotations

import json
import re
import shutil

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("torchvision")

from conftest import matrix_config, write_config  # noqa: E402
from harness import checkpoints, config, matrix  # noqa: E402
from harness.cache import Store  # noqa: E402
from harness.data.coco import image_records  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.evaluation import evaluate  # noqa: E402
from plugins.segmenters.tv_mask_rcnn import CONFIG_DIR, PROFILE_CONFIGS, TVMaskRCNN, load_config  # noqa: E402

CLASSES = [{"id": 1, "name": "inclusion"}, {"id": 2, "name": "patches"}, {"id": 3, "name": "scratches"}]


@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("tv") / "model"
    TVMaskRCNN(max_iters=20, threads=1).train(dataset, out, "tiny", seed=0)
    return out


def _relabel(src, dst, mapping: dict[int, int]):
    """A copy of the dataset whose category ids are mapped (a missing key drops that category)."""
    shutil.copytree(src, dst)
    for split in ("train", "val", "test"):
        data = json.loads((dst / f"{split}.json").read_text())
        data["categories"] = [{**c, "id": mapping[c["id"]]} for c in data["categories"] if c["id"] in mapping]
        data["annotations"] = [{**a, "category_id": mapping[a["category_id"]]} for a in data["annotations"]
                               if a["category_id"] in mapping]
        (dst / f"{split}.json").write_text(json.dumps(data))
    return dst


def test_train_predict_evaluate_round_trip(trained, dataset, tmp_path):
    assert (trained / "model.pth").is_file() and (trained / "config.yaml").is_file()
    assert json.loads((trained / "classes.json").read_text()) == CLASSES
    stats = json.loads((trained / "train_stats.json").read_text())
    assert stats["iters"] == 20 and stats["resumed_from"] == 0 and stats["s_per_iter"] > 0
    log = (trained / "work" / "train.log").read_text()
    assert "iter 20/20" in log and "loss_mask" in log

    records = image_records(dataset, "test")
    TVMaskRCNN(threads=1, predict_batch=4).predict(trained, records, dataset, tmp_path / "preds.json", progress=False)
    preds = json.loads((tmp_path / "preds.json").read_text())
    assert preds, "a model trained for 20 iterations still proposes something above score 0.05"
    sizes = {r["id"]: [r["height"], r["width"]] for r in records}
    for p in preds:
        assert p["category_id"] in (1, 2, 3) and 0.05 <= p["score"] <= 1.0
        assert isinstance(p["segmentation"]["counts"], str) and p["segmentation"]["size"] == sizes[p["image_id"]]
        x, y, w, h = p["bbox"]
        assert w >= 0 and h >= 0 and x + w <= sizes[p["image_id"]][1] + 0.01
    rows = evaluate(dataset / "test.json", tmp_path / "preds.json")
    overall = [r for r in rows if r["metric"] == "AP" and r["category"] == "all"]
    assert {r["iou_type"] for r in overall} == {"bbox", "segm"}
    assert all(r["value"] is not None and 0.0 <= r["value"] <= 1.0 for r in overall)


def test_score_threshold_filters_predictions(trained, dataset, tmp_path):
    records = image_records(dataset, "test")
    TVMaskRCNN(threads=1, score_thr=0.0).predict(trained, records, dataset, tmp_path / "all.json", progress=False)
    TVMaskRCNN(threads=1, score_thr=0.3).predict(trained, records, dataset, tmp_path / "top.json", progress=False)
    everything = json.loads((tmp_path / "all.json").read_text())
    top = json.loads((tmp_path / "top.json").read_text())
    assert len(top) < len(everything) and all(p["score"] >= 0.3 for p in top)


def test_predictions_carry_the_datasets_category_ids(dataset, tmp_path):
    data = _relabel(dataset, tmp_path / "data", {1: 10, 2: 20, 3: 30})
    TVMaskRCNN(max_iters=2, threads=1).train(data, tmp_path / "model", "tiny", seed=0)
    assert [c["id"] for c in json.loads((tmp_path / "model" / "classes.json").read_text())] == [10, 20, 30]
    TVMaskRCNN(threads=1, score_thr=0.0).predict(tmp_path / "model", image_records(data, "test"), data,
                                                 tmp_path / "preds.json", progress=False)
    preds = json.loads((tmp_path / "preds.json").read_text())
    assert preds and {p["category_id"] for p in preds} <= {10, 20, 30}


class Killed(Exception):
    """Stands for the process dying."""


def test_interrupted_training_resumes_where_it_stopped(dataset, tmp_path, monkeypatch):
    cfg = tmp_path / "every2.yaml"
    cfg.write_text(f"_base_: {CONFIG_DIR / PROFILE_CONFIGS['tiny']}\ntrain: {{checkpoint_interval: 2}}\n")
    real_save = checkpoints.save

    def save_then_die(obj, path):
        real_save(obj, path)
        if path.name == "last.pth":
            raise Killed

    out = tmp_path / "resumed"
    monkeypatch.setattr(checkpoints, "save", save_then_die)
    with pytest.raises(Killed):
        TVMaskRCNN(config=str(cfg), max_iters=4, threads=1).train(dataset, out, "tiny", seed=0)
    monkeypatch.undo()
    assert not (out / "model.pth").exists()
    assert torch.load(out / "work" / "last.pth", weights_only=True)["iter"] == 2

    TVMaskRCNN(config=str(cfg), max_iters=4, threads=1).train(dataset, out, "tiny", seed=0)
    stats = json.loads((out / "train_stats.json").read_text())
    assert stats["iters"] == 4 and stats["resumed_from"] == 2
    assert "resumed from" in (out / "work" / "train.log").read_text()

    # iterations 3-4 saw the same images, flips, RoI samples and momentum as in an uninterrupted run
    straight = tmp_path / "straight"
    TVMaskRCNN(config=str(cfg), max_iters=4, threads=1).train(dataset, straight, "tiny", seed=0)
    a = torch.load(out / "model.pth", weights_only=True)["state_dict"]
    b = torch.load(straight / "model.pth", weights_only=True)["state_dict"]
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_longer_schedule_continues_a_finished_one(dataset, tmp_path):
    out = tmp_path / "model"
    TVMaskRCNN(max_iters=2, threads=1).train(dataset, out, "tiny", seed=0)
    TVMaskRCNN(max_iters=3, threads=1).train(dataset, out, "tiny", seed=0)
    stats = json.loads((out / "train_stats.json").read_text())
    assert stats["iters"] == 3 and stats["resumed_from"] == 2


def test_exported_model_and_checkpoint_load_with_weights_only(trained):
    ckpt = torch.load(trained / "model.pth", weights_only=True)  # no allow-list needed
    assert ckpt["meta"]["classes"] == [c["name"] for c in CLASSES]
    assert ckpt["meta"]["category_ids"] == [1, 2, 3]
    assert all(isinstance(v, torch.Tensor) for v in ckpt["state_dict"].values())
    resume = torch.load(trained / "work" / "last.pth", weights_only=True)
    assert resume["iter"] == 20 and "momentum_buffer" in next(iter(resume["optimizer"]["state"].values()))


def test_init_skips_heads_of_another_class_count(trained, dataset, tmp_path):
    data = _relabel(dataset, tmp_path / "data", {1: 1, 2: 2})
    out = tmp_path / "model"
    TVMaskRCNN(max_iters=1, threads=1).train(data, out, "tiny", seed=0, init=str(trained / "model.pth"))
    log = (out / "work" / "train.log").read_text()
    loaded, total = (int(v) for v in re.search(r"loaded (\d+)/(\d+) tensors", log).groups())
    # the class-specific last layers of the box and mask heads: weight and bias of cls_score, bbox_pred, mask logits
    assert total - loaded == 6 and "skipped 6 tensors" in log
    assert "roi_heads.box_predictor.cls_score.weight (4, 256) vs (3, 256)" in log


def test_init_refuses_a_checkpoint_that_fits_nothing(dataset, tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"state_dict": {"some.weight": torch.zeros(3)}}, path)
    with pytest.raises(HarnessError, match="other.pth: no tensor fits"):
        TVMaskRCNN(max_iters=1, threads=1).train(dataset, tmp_path / "model", "tiny", seed=0, init=str(path))


def test_editing_the_model_config_changes_its_fingerprint(tmp_path):
    cfg = tmp_path / "model.yaml"
    cfg.write_text(f"_base_: {CONFIG_DIR / PROFILE_CONFIGS['tiny']}\n")
    before = TVMaskRCNN(config=str(cfg)).model_fingerprint("tiny")
    assert before == TVMaskRCNN().model_fingerprint("tiny")  # the content defines the model, not the path
    cfg.write_text(cfg.read_text() + "fpn: {out_channels: 32}\n")
    assert TVMaskRCNN(config=str(cfg)).model_fingerprint("tiny") != before
    assert len({TVMaskRCNN().model_fingerprint(p) for p in TVMaskRCNN.profiles}) == 3
    cfg.write_text(f"_base_: {PROFILE_CONFIGS['tiny']}\n")  # a bare name means configs/torchvision/
    assert TVMaskRCNN(config=str(cfg)).model_fingerprint("tiny") == before


def test_config_errors_name_the_file_and_key(tmp_path):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(f"_base_: {CONFIG_DIR / PROFILE_CONFIGS['cpu']}\nfpn: {{channels: 32}}\n")
    with pytest.raises(HarnessError, match=r"bad.yaml: unknown key 'fpn.channels'"):
        load_config(cfg)
    cfg.write_text("input: {size: 128, size_divisor: 32}\n")
    with pytest.raises(HarnessError, match=r"bad.yaml: missing key"):
        load_config(cfg)
    with pytest.raises(HarnessError, match="unknown profile 'huge'"):
        TVMaskRCNN().model_fingerprint("huge")


def test_profiles_build_the_models_they_mirror():
    from plugins.segmenters.tv_mask_rcnn import build_model

    def params(profile):
        model = build_model(load_config(CONFIG_DIR / PROFILE_CONFIGS[profile]), 3)
        return model, sum(p.numel() for p in model.parameters())

    seed, n_seed = params("seed")
    cpu, n_cpu = params("cpu")
    tiny, n_tiny = params("tiny")
    assert n_seed > 40e6 > n_cpu > n_tiny  # R50-FPN (torchvision's is 44M) > R18-FPN > quarter-width R18
    assert not seed.backbone.body.layer1[0].conv1.weight.requires_grad  # stage 1 frozen, as mmdet's seed
    assert seed.backbone.body.layer2[0].conv1.weight.requires_grad
    assert isinstance(cpu.backbone.body.bn1, torch.nn.GroupNorm) and cpu.backbone.body.bn1.num_groups == 32
    assert tiny.backbone.body.conv1.out_channels == 16 and tiny.backbone.fpn.inner_blocks[0][0].out_channels == 64


def test_a_matrix_cell_can_use_the_torchvision_segmenter(registry, dataset, tmp_path):
    seg = {"name": "tv-mask-rcnn", "profile": "tiny", "params": {"max_iters": 2, "threads": 1}}
    cfg = config.load(write_config(tmp_path / "m.yaml", matrix_config(dataset, segmenters=[seg],
                                                                       degradations=["none"])))
    summary = matrix.run(cfg, registry, out=tmp_path / "run", store=Store(tmp_path / "cache"), progress=False)
    assert summary["cells"] == {"total": 1, "done": 1, "failed": 0}
    assert len(list((tmp_path / "cache").glob("train/*/model.pth"))) == 1
    rows = [r for r in matrix_rows(tmp_path / "run") if r["metric"] == "AP"]
    assert {r["segmenter"] for r in rows} == {"tv-mask-rcnn"} and {r["iou_type"] for r in rows} == {"bbox", "segm"}


def matrix_rows(run_dir):
    import csv

    with open(run_dir / "results.csv", newline="") as f:
        return list(csv.DictReader(f))
