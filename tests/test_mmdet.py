"""The MMDetection segmenter end to end on a tiny synthetic set: train -> predict -> evaluate, and
checkpoint safety under torch's weights_only loader."""
from __future__ import annotations

import json

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("mmdet")

from harness import checkpoints  # noqa: E402
from harness.data.coco import image_records  # noqa: E402
from harness.data.synthetic import generate_synthetic  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.evaluation import evaluate  # noqa: E402
from plugins.segmenters.mmdet_mask_rcnn import MMDetMaskRCNN  # noqa: E402


class Foreign:
    """Stands for any object a malicious or careless checkpoint could smuggle in."""

    def __reduce__(self):
        return (print, ("this must never run",))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("mmdet")
    data = root / "data"
    generate_synthetic(data, n_train=8, n_val=2, n_test=4, size=64, seed=1, progress=False)
    seg = MMDetMaskRCNN(max_iters=3, threads=2)
    seg.train(data, root / "model", "tiny", seed=0)
    return seg, data, root


def test_train_predict_evaluate_round_trip(trained):
    seg, data, root = trained
    model = root / "model"
    assert (model / "model.pth").is_file() and (model / "config.py").is_file()
    assert json.loads((model / "classes.json").read_text()) == ["inclusion", "patches", "scratches"]
    stats = json.loads((model / "train_stats.json").read_text())
    assert stats["iters"] == 3
    records = image_records(data, "test")
    seg.predict(model, records, data, root / "preds.json", progress=False)
    preds = json.loads((root / "preds.json").read_text())
    assert isinstance(preds, list)
    for p in preds:
        assert p["image_id"] in {r["id"] for r in records}
        assert p["category_id"] in (1, 2, 3)
        assert set(p["segmentation"]) == {"size", "counts"} and isinstance(p["segmentation"]["counts"], str)
        assert 0.0 <= p["score"] <= 1.0
    rows = evaluate(data / "test.json", root / "preds.json")
    assert {r["iou_type"] for r in rows} == {"bbox", "segm"}
    overall = [r for r in rows if r["metric"] == "AP" and r["category"] == "all"]
    assert all(r["value"] is not None and 0.0 <= r["value"] <= 1.0 for r in overall)


def test_interrupted_training_resumes_from_its_checkpoint(trained, tmp_path):
    _, data, _ = trained
    out = tmp_path / "model"
    MMDetMaskRCNN(max_iters=2, threads=2).train(data, out, "tiny", seed=0)
    assert (out / "work" / "last_checkpoint").is_file()
    (out / "model.pth").unlink()
    MMDetMaskRCNN(max_iters=4, threads=2).train(data, out, "tiny", seed=0)
    # resumed at iteration 2, so only 2 iterations were run this time
    assert json.loads((out / "train_stats.json").read_text())["iters"] == 4
    log = "".join(p.read_text() for p in (out / "work").rglob("*.log"))
    assert "resumed" in log.lower() or "Load checkpoint" in log


def test_mmengine_checkpoint_loads_with_weights_only(trained):
    _, _, root = trained
    ckpts = sorted((root / "model" / "work").glob("iter_*.pth"))
    assert ckpts, "training keeps an mmengine checkpoint"
    ckpt = checkpoints.load(ckpts[-1])
    assert "state_dict" in ckpt and "message_hub" in ckpt


def test_checkpoint_with_foreign_object_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": {"w": torch.zeros(2)}, "meta": Foreign()}, path)
    with pytest.raises(HarnessError, match="evil.pth: refused"):
        checkpoints.load(path)


def test_exported_model_holds_only_tensors_and_plain_data(trained):
    _, _, root = trained
    ckpt = torch.load(root / "model" / "model.pth", weights_only=True)  # no allow-list needed
    assert ckpt["meta"]["classes"] == ["inclusion", "patches", "scratches"]


def test_editing_the_model_config_changes_its_fingerprint(tmp_path):
    """A cached model must not survive an edit of the config file that defines it (same path, new content)."""
    from plugins.segmenters.mmdet_mask_rcnn import CONFIG_DIR

    cfg = tmp_path / "model.py"
    cfg.write_text(f"_base_ = '{CONFIG_DIR / 'mask-rcnn_tiny.py'}'\n")
    before = MMDetMaskRCNN(config=str(cfg)).model_fingerprint("tiny")
    cfg.write_text(cfg.read_text() + "model = dict(neck=dict(out_channels=32))\n")
    assert MMDetMaskRCNN(config=str(cfg)).model_fingerprint("tiny") != before
    assert MMDetMaskRCNN().model_fingerprint("cpu") != MMDetMaskRCNN().model_fingerprint("tiny")
