"""Mean-teacher self-training on unlabelled target images (issue 13, part 4): the `train_on: {self_training: ...}`
entry, its trainset (a disjoint half of the train split degraded, or a real target's pool), pseudo-labels, the EMA
teacher, and tiny tv-mask-rcnn and mmdet-mask-rcnn fits (deterministic, resumable, and ALDI's control without
pseudo-labels)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from harness import checkpoints, config, matrix
from harness.cache import Store
from harness.data.coco import load_split
from harness.errors import HarnessError
from harness.imageio import read_image
from plugins.segmenters import self_training as st
from plugins.segmenters.tv_mask_rcnn import TVMaskRCNN
from tests.conftest import matrix_config, write_config

TINY = {"max_iters": 2, "batch_size": 1, "threads": 1}
NOISE = {"name": "gaussian_noise", "severities": [2, 4]}


def _segmenters(name: str = "tv-mask-rcnn", threshold: float = 0.05) -> list[dict]:
    params = TINY if name in ("tv-mask-rcnn", "mmdet-mask-rcnn") else {}
    base = {"name": name, "profile": "tiny", "params": params}
    return [{**base, "label": "source"},
            {**base, "label": "tuned", "init": {"segmenter": "source"}, "adapters": ["identity"]},
            {**base, "label": "self-trained", "init": {"segmenter": "source"}, "adapters": ["identity"],
             "train_on": {"self_training": {"target": "gaussian_noise", "threshold": threshold}}},
            {**base, "label": "ema-control", "init": {"segmenter": "source"}, "adapters": ["identity"],
             "train_on": {"self_training": {"target": "gaussian_noise", "threshold": threshold,
                                            "pseudo_labels": False}}}]


def _load(tmp_path: Path, registry=None, **overrides) -> config.MatrixConfig:
    raw = matrix_config(overrides.pop("dataset"), degradations=["none", NOISE], **overrides)
    return config.load(write_config(tmp_path / "m.yaml", raw), registry=registry)


# -- config -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("entry, message", [
    ({"train_on": {"self_training": {"target": "fog"}}},
     r"segmenters\[1\].train_on.self_training.target: 'fog' is not a target of this matrix"),
    ({"train_on": {"self_training": {"target": "none"}}}, "'none', the clean source, is no target"),
    ({"train_on": {"self_training": {"target": "gaussian_noise", "threshold": 0}}},
     r"segmenters\[1\].train_on.self_training.threshold: expected a score in \(0, 1\), got 0"),
    ({"train_on": {"self_training": {"target": "gaussian_noise", "threshold": 1.5}}}, "threshold: expected a score"),
    ({"train_on": {"self_training": {"target": "gaussian_noise", "teacher_share": 1}}},
     r"train_on.self_training.teacher_share: expected the teacher's EMA share per iteration in \[0, 1\)"),
    ({"train_on": {"self_training": {"target": "gaussian_noise", "pseudo_labels": "no"}}},
     "self_training.pseudo_labels: expected true or false"),
    ({"train_on": {"self_training": {"target": "gaussian_noise", "treshold": 0.5}}},
     "self_training: unknown key 'treshold'"),
    ({"train_on": {"self_training": {"threshold": 0.5}}}, "self_training: expected a mapping with 'target'"),
    ({"train_on": {"self_training": {"target": "gaussian_noise"}, "augment": ["jpeg"]}},
     "train_on: 'augment' does not combine with 'self_training'"),
])
def test_bad_self_training_entries_are_one_line_errors_naming_the_key(dataset, tmp_path, entry, message):
    seg = {"name": "threshold", "profile": "tiny", "label": "st", "init": {"segmenter": "threshold"}, **entry}
    with pytest.raises(HarnessError, match=message) as err:
        _load(tmp_path, dataset=dataset, segmenters=[{"name": "threshold", "profile": "tiny"}, seg])
    assert "\n" not in str(err.value) and "segmenters[1]" in str(err.value)


def test_self_training_must_fine_tune_a_segmenter(dataset, tmp_path):
    seg = {"name": "threshold", "profile": "tiny", "label": "st",
           "train_on": {"self_training": {"target": "gaussian_noise"}}}
    with pytest.raises(HarnessError, match=r"segmenters\[1\].init: self-training fine-tunes a source model: give "
                                           r"the entry init: \{segmenter: LABEL\}"):
        _load(tmp_path, dataset=dataset, segmenters=[{"name": "threshold", "profile": "tiny"}, seg])


def test_segmenters_without_self_training_refuse_it(registry, dataset, tmp_path):
    name = "threshold"
    with pytest.raises(HarnessError, match=f"train_on.self_training: segmenter '{name}' does not implement "
                                           "self-training") as err:
        _load(tmp_path, registry, dataset=dataset, segmenters=_segmenters(name)[:3])
    assert "\n" not in str(err.value) and "segmenters[2]" in str(err.value)


def test_mmdet_implements_self_training(registry, dataset, tmp_path):
    if "mmdet-mask-rcnn" not in registry.names("segmenter"):
        pytest.skip("mmdet-mask-rcnn not registered")
    cfg = _load(tmp_path, registry, dataset=dataset, segmenters=_segmenters("mmdet-mask-rcnn"))
    assert config.self_training_of(cfg.segmenters[2])["target"] == "gaussian_noise"


def test_defaults_are_filled_in(dataset, tmp_path):
    cfg = _load(tmp_path, dataset=dataset, segmenters=_segmenters())
    assert config.self_training_of(cfg.segmenters[2]) == {"target": "gaussian_noise", "threshold": 0.05,
                                                          "teacher_share": 0.99, "pseudo_labels": True,
                                                          "weight": 1.0}


# -- planning and the trainset ----------------------------------------------------------------------------------
def test_unlabelled_images_are_degraded_copies_of_a_disjoint_half(registry, dataset, tmp_path):
    cfg = _load(tmp_path, registry, dataset=dataset, segmenters=_segmenters())
    store = Store(tmp_path / "cache")
    p = matrix.plan(cfg, registry, store, progress=False)
    trains = {c.labels["segmenter"]: p.stages[c.stages["train"]] for c in p.cells}
    st_train, control = trains["self-trained"], trains["ema-control"]
    # the entry and its control share one trainset; their train stages differ only in pseudo_labels
    assert st_train.inputs["data"] == control.inputs["data"] and st_train.inputs["data"].startswith("trainset-")
    assert st_train.inputs["init"] == trains["tuned"].inputs["init"] == trains["source"].key
    assert st_train.spec["self_training"] == {"threshold": 0.05, "teacher_share": 0.99, "pseudo_labels": True,
                                              "weight": 1.0}
    assert {k: v for k, v in control.spec.items() if k != "self_training"} == trains["tuned"].spec
    assert control.spec["self_training"] == {"teacher_share": 0.99, "pseudo_labels": False}
    assert "self_training" not in trains["tuned"].spec
    spec = p.stages[st_train.inputs["data"]].spec["self_training"]
    assert spec["degradation"]["name"] == "gaussian_noise" and spec["severities"] == [2, 4]

    matrix.compute(cfg, registry, {"trainset"}, store=store, progress=False)
    folder = store.path("trainset", st_train.inputs["data"])
    labelled = load_split(folder, "train")
    unlabelled = json.loads((folder / st.UNLABELLED).read_text())
    source = load_split(dataset, "train")
    stem = lambda name: Path(name).stem  # noqa: E731
    ours, theirs = {stem(im["file_name"]) for im in labelled["images"]}, {stem(im["file_name"])
                                                                         for im in unlabelled["images"]}
    assert not ours & theirs and ours | theirs == {stem(im["file_name"]) for im in source["images"]}
    assert abs(len(ours) - len(theirs)) <= 1 and "annotations" not in unlabelled
    kept = {im["id"] for im in labelled["images"]}
    assert {a["image_id"] for a in labelled["annotations"]} <= kept
    assert len(labelled["annotations"]) == sum(a["image_id"] in kept for a in source["annotations"])
    by_stem = {stem(im["file_name"]): im["file_name"] for im in source["images"]}
    first = unlabelled["images"][0]
    degraded, clean = read_image(folder / first["file_name"]), read_image(dataset / by_stem[stem(first["file_name"])])
    assert degraded.shape == clean.shape and not np.array_equal(degraded, clean)
    im = labelled["images"][0]
    assert np.array_equal(read_image(folder / im["file_name"]), read_image(dataset / by_stem[stem(im["file_name"])]))


# -- the pieces -------------------------------------------------------------------------------------------------
def test_pseudo_labels_are_the_detections_above_the_threshold():
    masks = torch.zeros(4, 1, 8, 8)
    masks[0, 0, 1:4, 1:4] = 0.9
    masks[1, 0, 2:6, 2:6] = 0.7
    masks[1, 0, 2, 2] = 0.4  # below 0.5: not part of the pseudo-mask
    masks[2, 0, :, :] = 0.3  # scores high but its mask is empty after thresholding
    masks[3, 0, 5:8, 5:8] = 0.95
    dets = {"boxes": torch.tensor([[1., 1., 4., 4.], [2., 2., 6., 6.], [0., 0., 8., 8.], [5., 5., 8., 8.]]),
            "labels": torch.tensor([1, 2, 3, 4]), "scores": torch.tensor([0.9, 0.71, 0.95, 0.69]), "masks": masks}
    out = st.pseudo_labels(dets, 0.7)
    assert out["labels"].tolist() == [1, 2] and out["labels"].dtype == torch.int64
    assert torch.equal(out["boxes"], dets["boxes"][:2])
    assert out["masks"].shape == (2, 8, 8) and out["masks"].dtype == torch.uint8
    assert int(out["masks"][0].sum()) == 9 and int(out["masks"][1].sum()) == 15 and out["masks"][1, 2, 2] == 0
    none = st.pseudo_labels(dets, 0.99)
    assert none["boxes"].shape == (0, 4) and none["masks"].shape == (0, 8, 8) and len(none["labels"]) == 0


def test_the_teacher_is_the_ema_of_the_student():
    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = teacher.weight.detach().clone()
    st.ema_update(teacher, student, 0.9)
    assert torch.allclose(teacher.weight, 0.9 * before + 0.1 * student.weight.detach())
    st.ema_update(teacher, student, 0.0)
    assert torch.equal(teacher.weight, student.weight)


def test_strong_augmentation_is_photometric_and_seeded():
    image = torch.rand(3, 32, 40)
    a = st.strong_augment(image, np.random.default_rng(1))
    assert a.shape == image.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    assert torch.equal(a, st.strong_augment(image, np.random.default_rng(1)))
    assert not torch.equal(a, image)


# -- a tiny fit -------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(dataset, tmp_path_factory):
    """A 2-iteration source model, and the self-training trainset of the gaussian_noise target."""
    from harness.registry import default_registry

    reg = default_registry()
    tmp = tmp_path_factory.mktemp("st")
    cfg = config.load(write_config(tmp / "m.yaml", matrix_config(str(dataset), degradations=["none", NOISE],
                                                                  segmenters=_segmenters())), registry=reg)
    store = Store(tmp / "cache")
    matrix.compute(cfg, reg, {"trainset"}, store=store, progress=False)
    p = matrix.plan(cfg, reg, store, progress=False)
    trains = {c.labels["segmenter"]: p.stages[c.stages["train"]] for c in p.cells}
    source = tmp / "source"
    TVMaskRCNN(**TINY).train(dataset, source, "tiny", seed=0)
    return {"source": source, "data": store.path("trainset", trains["self-trained"].inputs["data"])}


def _state(folder: Path) -> dict:
    return checkpoints.load(folder / "model.pth")["state_dict"]


def test_a_tiny_self_training_runs_exports_the_teacher_and_is_deterministic(trained, tmp_path):
    options = {"threshold": 0.05, "teacher_share": 0.99, "pseudo_labels": True, "weight": 1.0}
    init = str(trained["source"] / "model.pth")
    a, b = tmp_path / "a", tmp_path / "b"
    TVMaskRCNN(**TINY).self_train(trained["data"], a, "tiny", 0, init, options)
    TVMaskRCNN(**TINY).self_train(trained["data"], b, "tiny", 0, init, options)
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    stats = json.loads((a / "train_stats.json").read_text())
    assert stats["iters"] == 2 and stats["self_training"]["exported"] == "teacher"
    assert stats["self_training"]["pseudo_labels_per_image"] > 0  # a near-random teacher clears 0.05
    # the export is the teacher: the EMA of the student (share 0.99) from the source weights, not the student
    ckpt = checkpoints.load(a / "work" / "last.pth")
    src = _state(trained["source"])
    key = next(k for k in sa if k.endswith("box_predictor.cls_score.weight"))
    assert torch.equal(sa[key], ckpt["teacher"][key]) and not torch.equal(sa[key], ckpt["model"][key])
    assert (sa[key] - src[key]).abs().max() < (ckpt["model"][key] - src[key]).abs().max()
    assert "loss_target" in (a / "work" / "train.log").read_text()


def test_the_control_without_pseudo_labels_runs_and_differs(trained, tmp_path):
    init = str(trained["source"] / "model.pth")
    options = {"teacher_share": 0.99, "pseudo_labels": False}  # as the control's train spec gives them
    TVMaskRCNN(**TINY).self_train(trained["data"], tmp_path / "c", "tiny", 0, init, options)
    assert "loss_target" not in (tmp_path / "c" / "work" / "train.log").read_text()
    assert json.loads((tmp_path / "c" / "train_stats.json").read_text())["self_training"]["pseudo_labels"] is False


class Killed(Exception):
    """Stands for the process dying."""


def _die_at_second_checkpoint(monkeypatch, train) -> None:
    """Run ``train`` as a process killed right after it wrote its second ``last.pth``."""
    real_save, calls = checkpoints.save, []

    def save_then_die(obj, path):
        real_save(obj, path)
        calls.append(path)
        if path.name == "last.pth" and len(calls) == 2:
            raise Killed

    monkeypatch.setattr(checkpoints, "save", save_then_die)
    with pytest.raises(Killed):
        train()
    monkeypatch.undo()


def test_an_interrupted_self_training_resumes_bit_for_bit(trained, tmp_path, monkeypatch):
    init = str(trained["source"] / "model.pth")
    options = {"threshold": 0.05, "teacher_share": 0.9, "pseudo_labels": True, "weight": 1.0}
    params = {**TINY, "max_iters": 3, "checkpoint_interval": 1}
    out = tmp_path / "resumed"
    _die_at_second_checkpoint(monkeypatch, lambda: TVMaskRCNN(**params).self_train(trained["data"], out, "tiny", 0,
                                                                                   init, options))
    assert checkpoints.load(out / "work" / "last.pth")["iter"] == 2
    TVMaskRCNN(**params).self_train(trained["data"], out, "tiny", 0, init, options)
    assert json.loads((out / "train_stats.json").read_text())["resumed_from"] == 2
    straight = tmp_path / "straight"
    TVMaskRCNN(**params).self_train(trained["data"], straight, "tiny", 0, init, options)
    a, b = _state(out), _state(straight)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("name", ["tv-mask-rcnn", "mmdet-mask-rcnn"])
def test_the_matrix_trains_self_training_entries_through_their_stages(registry, dataset, tmp_path, name):
    if name not in registry.names("segmenter"):
        pytest.skip(f"{name} not registered")
    cfg = _load(tmp_path, registry, dataset=dataset, segmenters=_segmenters(name))
    store = Store(tmp_path / "cache")
    summary = matrix.compute(cfg, registry, {"train"}, store=store, progress=False)
    assert summary["failed"] == 0 and summary["computed"] >= 5  # trainset + 4 trainings
    p = matrix.plan(cfg, registry, store, progress=False)
    trains = {c.labels["segmenter"]: c.stages["train"] for c in p.cells}
    stats = {label: json.loads((store.path("train", key) / "train_stats.json").read_text())
             for label, key in trains.items()}
    assert stats["self-trained"]["self_training"]["pseudo_labels"] is True
    assert stats["ema-control"]["self_training"]["pseudo_labels"] is False and "self_training" not in stats["tuned"]
    rows = {r[0]["segmenter"]: r[0]["fitted_on"] for r in p.trained.values()}
    assert rows["self-trained"].startswith("train half + self-training on gaussian_noise")
    assert "no pseudo-labels" in rows["ema-control"]


def test_a_real_targets_unlabelled_images_are_its_pool(registry, dataset, tmp_path):
    from tests.test_targets import camera_b, pool_of

    camb = {"name": "camB", "data": str(camera_b(dataset, tmp_path / "camb")),
            "pool": str(pool_of(dataset, tmp_path / "pool"))}
    segs = _segmenters()
    for s in segs[2:]:
        s["train_on"]["self_training"]["target"] = "camB"
    raw = matrix_config(str(dataset), degradations=["none"], targets=[camb], segmenters=segs)
    cfg = config.load(write_config(tmp_path / "m.yaml", raw), registry=registry)
    store = Store(tmp_path / "cache")
    p = matrix.plan(cfg, registry, store, progress=False)
    train = next(p.stages[c.stages["train"]] for c in p.cells if c.labels["segmenter"] == "self-trained")
    trainset = p.stages[train.inputs["data"]]
    assert trainset.spec["self_training"] == {"pool": True} and "pool" in trainset.inputs
    matrix.compute(cfg, registry, {"trainset"}, store=store, progress=False)
    folder = store.path("trainset", trainset.key)
    assert len(load_split(folder, "train")["images"]) == len(load_split(dataset, "train")["images"])
    unlabelled = json.loads((folder / st.UNLABELLED).read_text())["images"]
    assert len(unlabelled) == len(load_split(Path(camb["pool"]), "pool")["images"])
    assert all((folder / im["file_name"]).is_file() for im in unlabelled)

    no_pool = {k: v for k, v in camb.items() if k != "pool"}
    cfg = config.load(write_config(tmp_path / "n.yaml", {**raw, "targets": [no_pool]}), registry=registry)
    with pytest.raises(HarnessError, match="train_on.self_training: real target 'camB' has no pool") as err:
        matrix.plan(cfg, registry, store, progress=False)
    assert "\n" not in str(err.value) and "'self-trained'" in str(err.value)


def test_target_images_without_pseudo_labels_train_as_background(trained, tmp_path):
    options = {"threshold": 0.999, "teacher_share": 0.99, "pseudo_labels": True, "weight": 1.0}
    TVMaskRCNN(**TINY).self_train(trained["data"], tmp_path / "e", "tiny", 0, str(trained["source"] / "model.pth"),
                                  options)
    stats = json.loads((tmp_path / "e" / "train_stats.json").read_text())
    assert stats["self_training"]["pseudo_labels_per_image"] == 0 and (tmp_path / "e" / "model.pth").is_file()



# -- mmdet-mask-rcnn: the same loop through mmdet's model ------------------------------------------------------
OPTIONS = {"threshold": 0.05, "teacher_share": 0.9, "pseudo_labels": True, "weight": 1.0}


@pytest.fixture(scope="module")
def mmdet_source(dataset, tmp_path_factory) -> str:
    """A 2-iteration mmdet source model (the self-training trainset is the ``trained`` fixture's)."""
    pytest.importorskip("mmdet")
    from plugins.segmenters.mmdet_mask_rcnn import MMDetMaskRCNN

    source = tmp_path_factory.mktemp("st-mmdet") / "source"
    MMDetMaskRCNN(**TINY).train(dataset, source, "tiny", seed=0)
    return str(source / "model.pth")


def _mmdet_self_train(trained, init: str, out: Path, options: dict, **params) -> None:
    from plugins.segmenters.mmdet_mask_rcnn import MMDetMaskRCNN

    MMDetMaskRCNN(**{**TINY, **params}).self_train(trained["data"], out, "tiny", 0, init, options)


def _losses(log: str, key: str) -> list[float]:
    import re

    return [float(v) for v in re.findall(rf"\b{key} (\S+)", log)]


def test_mmdet_self_training_runs_exports_the_teacher_and_is_deterministic(trained, mmdet_source, tmp_path):
    from plugins.segmenters.mmdet_mask_rcnn import MMDetMaskRCNN

    a, b = tmp_path / "a", tmp_path / "b"
    _mmdet_self_train(trained, mmdet_source, a, OPTIONS)
    _mmdet_self_train(trained, mmdet_source, b, OPTIONS)
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)
    log = (a / "work" / "train.log").read_text()
    assert _losses(log, "loss_target") and all(np.isfinite(_losses(log, "loss")))
    stats = json.loads((a / "train_stats.json").read_text())
    assert stats["iters"] == 2 and stats["batch_size"] == 1 and stats["input_size"] == 128
    assert stats["self_training"]["exported"] == "teacher" and stats["self_training"]["pseudo_labels_per_image"] > 0
    assert MMDetMaskRCNN().budget(a) is not None
    # the export is the teacher (the EMA of the student from the source weights), not the student
    ckpt = checkpoints.load(a / "work" / "last.pth")
    src = checkpoints.load(mmdet_source, mmengine=True)["state_dict"]
    key = "roi_head.bbox_head.fc_cls.weight"
    assert torch.equal(sa[key], ckpt["teacher"][key]) and not torch.equal(sa[key], src[key])
    assert (sa[key] - src[key]).abs().max() < (ckpt["model"][key] - src[key]).abs().max()
    # and it loads and predicts as any trained mmdet model
    model, _ = MMDetMaskRCNN(threads=1).load_model(a)
    assert torch.equal(model.state_dict()[key], sa[key])


def test_mmdet_control_without_pseudo_labels_runs_and_differs(trained, mmdet_source, tmp_path):
    _mmdet_self_train(trained, mmdet_source, tmp_path / "c", {"teacher_share": 0.9, "pseudo_labels": False})
    log = (tmp_path / "c" / "work" / "train.log").read_text()
    assert "loss_target" not in log and all(np.isfinite(_losses(log, "loss")))
    stats = json.loads((tmp_path / "c" / "train_stats.json").read_text())
    assert stats["self_training"]["pseudo_labels"] is False and stats["self_training"]["pseudo_labels_per_image"] == 0
    key = "roi_head.bbox_head.fc_cls.weight"
    source = checkpoints.load(mmdet_source, mmengine=True)["state_dict"]
    assert not torch.equal(_state(tmp_path / "c")[key], source[key])


def test_an_interrupted_mmdet_self_training_resumes_bit_for_bit(trained, mmdet_source, tmp_path, monkeypatch):
    params = {"max_iters": 3, "checkpoint_interval": 1}
    out, straight = tmp_path / "resumed", tmp_path / "straight"
    _die_at_second_checkpoint(monkeypatch, lambda: _mmdet_self_train(trained, mmdet_source, out, OPTIONS, **params))
    assert checkpoints.load(out / "work" / "last.pth")["iter"] == 2
    _mmdet_self_train(trained, mmdet_source, out, OPTIONS, **params)
    assert json.loads((out / "train_stats.json").read_text())["resumed_from"] == 2
    _mmdet_self_train(trained, mmdet_source, straight, OPTIONS, **params)
    a, b = checkpoints.load(out / "work" / "last.pth"), checkpoints.load(straight / "work" / "last.pth")
    assert a["iter"] == b["iter"] == 3
    for part in ("model", "teacher"):
        assert a[part].keys() == b[part].keys() and all(torch.equal(a[part][k], b[part][k]) for k in b[part])
    sa, sb = _state(out), _state(straight)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_mmdet_target_images_without_pseudo_labels_train_as_background(trained, mmdet_source, tmp_path):
    _mmdet_self_train(trained, mmdet_source, tmp_path / "e", {**OPTIONS, "threshold": 0.999})
    stats = json.loads((tmp_path / "e" / "train_stats.json").read_text())
    assert stats["self_training"]["pseudo_labels_per_image"] == 0
    assert all(np.isfinite(_losses((tmp_path / "e" / "work" / "train.log").read_text(), "loss_target")))
