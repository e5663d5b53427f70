"""Task-aware restoration (plugins/adapters/taskaware.py) and the segmenters' ``loss_fn``: the loss's gradient with
respect to the input matches finite differences, a fit leaves the segmenter's weights and buffers as they were,
lowers its loss, is a function of its seed (and resumes exactly), and the matrix plans one fit per trained model,
refusing a segmenter without ``loss_fn``."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from conftest import builtin_segmenters, matrix_config, write_config  # noqa: E402
from harness import config, matrix  # noqa: E402
from harness.cache import Store  # noqa: E402
from harness.data.coco import image_records  # noqa: E402
from harness.errors import HarnessError  # noqa: E402
from harness.imageio import read_image, write_image  # noqa: E402
from plugins.adapters import training as T  # noqa: E402
from plugins.adapters.taskaware import TaskAware, TaskTrainer  # noqa: E402
from plugins.segmenters.tv_mask_rcnn import TVMaskRCNN, _decode  # noqa: E402


SEGMENTERS = builtin_segmenters()
FIT = {"depth": 3, "width": 8, "iterations": 6, "batch": 2, "lr": 1e-3, "checkpoint_every": 2, "log_every": 1,
       "threads": 1, "device": "cpu"}


@pytest.fixture
def models(tiny_models):
    return tiny_models


@pytest.fixture(scope="module")
def triples(tmp_path_factory, dataset):
    """(clean paths, degraded paths, annotations) of the training images, degraded by gaussian noise s3."""
    from harness.degrade import degrade_image
    from harness.registry import default_registry

    noise = default_registry().create("degradation", "gaussian_noise", {})
    root = tmp_path_factory.mktemp("taskaware-pairs")
    recs = image_records(dataset, "train")
    target = []
    for rec in recs:
        dest = root / rec["file_name"]
        write_image(dest, degrade_image(noise, read_image(rec["path"]), dest.stem, 3, 0))
        target.append(dest)
    return [r["path"] for r in recs], target, [r["annotations"] for r in recs]


def _example(dataset):
    """The first training image as a 1x1xHxW float64 batch in [0, 1], and its targets."""
    rec = next(r for r in image_records(dataset, "train") if r["annotations"])
    image = T.as_channels(read_image(rec["path"]), 1)[:, :, 0]
    h, w = image.shape
    masks = np.stack([_decode(a["segmentation"], h, w) for a in rec["annotations"]])
    boxes = []
    for m in masks:
        ys, xs = np.nonzero(m.any(axis=1))[0], np.nonzero(m.any(axis=0))[0]
        boxes.append((xs[0], ys[0], xs[-1] + 1, ys[-1] + 1))
    targets = [{"boxes": torch.tensor(boxes, dtype=torch.float32),
                "labels": torch.tensor([a["category_id"] for a in rec["annotations"]]),
                "masks": torch.from_numpy(masks)}]
    return torch.from_numpy(image.astype(np.float64) / 255.0)[None, None], targets


def _one_proposal(loss) -> None:
    """Keep one RPN proposal (plus the ground truth, which both add as proposals): which proposals survive NMS is
    a discrete choice that a finite difference would step across; with one, the loss is smooth in the input."""
    model = loss.model
    if hasattr(model, "rpn"):
        model.rpn._pre_nms_top_n["training"] = model.rpn._post_nms_top_n["training"] = 1
    else:
        model.train_cfg.rpn_proposal.nms_pre = model.train_cfg.rpn_proposal.max_per_img = 1


def _seeded(loss, x, targets):
    torch.manual_seed(0)  # the samplers' draws: the same for every evaluation
    return loss(x, targets)


@pytest.mark.parametrize("cls", SEGMENTERS)
def test_loss_gradient_matches_central_differences(cls, models, dataset):
    """d loss / d pixel from autograd against (L(x + e) - L(x - e)) / 2e at the pixels of largest gradient: in
    float64 for torchvision; mmcv's NMS takes float32 only, so mmdet's is checked in float32 (looser)."""
    loss = cls(threads=1, device="cpu").loss_fn(models[cls.name], torch.device("cpu"))
    _one_proposal(loss)
    x, targets = _example(dataset)
    double = cls is TVMaskRCNN
    dtype = torch.float64 if double else torch.float32
    loss.model.to(dtype)
    x = x.to(dtype).requires_grad_(True)
    value = _seeded(loss, x, targets)
    assert value.ndim == 0 and torch.isfinite(value)
    (grad,) = torch.autograd.grad(value, x)
    assert grad.abs().max() > 0
    eps, tol = 1e-3, (0.05 if double else 0.15)
    with torch.no_grad():
        for i in torch.topk(grad.abs().flatten(), 4).indices:
            up, down = x.detach().clone().flatten(), x.detach().clone().flatten()
            up[i] += eps
            down[i] -= eps
            fd = (_seeded(loss, up.view_as(x), targets) - _seeded(loss, down.view_as(x), targets)) / (2 * eps)
            analytic = grad.flatten()[i]
            assert abs(float(fd) - float(analytic)) <= tol * abs(float(analytic)) + 1e-4, (int(i), fd, analytic)


@pytest.mark.parametrize("cls", SEGMENTERS)
def test_loss_leaves_weights_and_buffers_unchanged(cls, models, dataset):
    loss = cls(threads=1, device="cpu").loss_fn(models[cls.name], torch.device("cpu"))
    before = {k: v.clone() for k, v in loss.model.state_dict().items()}
    assert not any(p.requires_grad for p in loss.model.parameters())
    x, targets = _example(dataset)
    x = x.float().requires_grad_(True)
    for _ in range(3):
        _seeded(loss, x, targets).backward()
    after = loss.model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert all(p.grad is None for p in loss.model.parameters())
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_batch_norm_buffers_stay_put(models, dataset, tmp_path):
    """A segmenter with batch norms (torchvision's `bn`): the loss runs their eval mode, so the running
    statistics and the batch counter do not move although the detector runs in training mode."""
    import yaml

    from plugins.segmenters.tv_mask_rcnn import load_config

    folder = tmp_path / "bn"
    folder.mkdir()
    cfg = load_config(models["tv-mask-rcnn"] / "config.yaml")
    cfg["backbone"]["norm"] = "bn"
    (folder / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    (folder / "classes.json").write_text((models["tv-mask-rcnn"] / "classes.json").read_text())
    from plugins.segmenters.tv_mask_rcnn import build_model

    from harness import checkpoints

    model = build_model(cfg, len(json.loads((folder / "classes.json").read_text())))
    checkpoints.save({"state_dict": {k: v for k, v in model.state_dict().items()}, "meta": {}}, folder / "model.pth")
    loss = TVMaskRCNN(threads=1, device="cpu").loss_fn(folder, torch.device("cpu"))
    buffers = {k: v.clone() for k, v in loss.model.named_buffers()}
    assert any("running_mean" in k for k in buffers)
    x, targets = _example(dataset)
    _seeded(loss, x.float().requires_grad_(True), targets).backward()
    assert all(torch.equal(v, dict(loss.model.named_buffers())[k]) for k, v in buffers.items())


def _weights(fit_dir: Path) -> dict:
    return T.load_weights(fit_dir / "weights.pt")


@pytest.mark.parametrize("cls", SEGMENTERS)
def test_fit_lowers_the_task_loss_and_leaves_the_model_file(cls, models, triples, tmp_path, monkeypatch):
    """Through a whole fit the model file stays as it was (and the fit checks the segmenter's state in memory);
    on one fixed batch and sampler seed (a fixed objective, smooth with one proposal), the task loss falls."""
    model_file = models[cls.name] / cls.model_file
    before = model_file.read_bytes()
    adapter = TaskAware(**{**FIT, "iterations": 3})
    adapter.fit_with_task(*triples, cls(threads=1), models[cls.name], tmp_path / "fit", seed=0, progress=False)
    assert model_file.read_bytes() == before
    meta = json.loads((tmp_path / "fit" / "model.json").read_text())
    assert meta["through_segmenter"] and meta["iterations"] == 3
    assert adapter.budget(tmp_path / "fit")["iterations"] == 3

    adapter = TaskAware(**{**FIT, "iterations": 8, "pixel_weight": 0.01})
    loss = cls(threads=1, device="cpu").loss_fn(models[cls.name], torch.device("cpu"))
    _one_proposal(loss)
    trainer = TaskTrainer(adapter, *triples[:2], triples[2], loss, tmp_path / "steps", 0, torch.device("cpu"))
    batch = trainer._sample()
    monkeypatch.setattr(trainer, "_sample", lambda: batch)
    monkeypatch.setattr("plugins.adapters.taskaware.seed_from", lambda *args: 0)
    tasks = [trainer.step()["task"] for _ in range(8)]
    assert tasks[-1] < tasks[0] and min(tasks[4:]) < min(tasks[:2]), tasks
    state = loss.model.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in trainer.frozen.items())


def test_fit_is_a_function_of_its_seed_and_resumes_exactly(models, triples, tmp_path, monkeypatch):
    seg, model = TVMaskRCNN(threads=1), models["tv-mask-rcnn"]
    TaskAware(**FIT).fit_with_task(*triples, seg, model, tmp_path / "a", seed=3, progress=False)
    TaskAware(**FIT).fit_with_task(*triples, seg, model, tmp_path / "other", seed=4, progress=False)
    real_step = TaskTrainer.step

    def dying(self):
        if self.iteration == 3:
            raise KeyboardInterrupt
        return real_step(self)

    monkeypatch.setattr(TaskTrainer, "step", dying)
    with pytest.raises(KeyboardInterrupt):
        TaskAware(**FIT).fit_with_task(*triples, seg, model, tmp_path / "b", seed=3, progress=False)
    assert (tmp_path / "b" / "checkpoint.pt").is_file()
    monkeypatch.setattr(TaskTrainer, "step", real_step)
    TaskAware(**FIT).fit_with_task(*triples, seg, model, tmp_path / "b", seed=3, progress=False)
    a, b, other = _weights(tmp_path / "a"), _weights(tmp_path / "b"), _weights(tmp_path / "other")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], other[k]) for k in a)
    assert T.read_losses(tmp_path / "a" / "losses.csv") == [
        {**r, "seconds": q["seconds"]} for r, q in zip(T.read_losses(tmp_path / "b" / "losses.csv"),
                                                        T.read_losses(tmp_path / "a" / "losses.csv"))]


def test_saved_fit_loads_to_identical_outputs(models, triples, tmp_path):
    TaskAware(**FIT).fit_with_task(*triples, TVMaskRCNN(threads=1), models["tv-mask-rcnn"], tmp_path / "fit",
                                   seed=0, progress=False)
    image = read_image(triples[1][0])
    outs = []
    for _ in range(2):
        adapter = TaskAware(**FIT)
        adapter.load(tmp_path / "fit")
        outs.append(adapter.adapt(image))
    assert outs[0].dtype == np.uint8 and outs[0].shape == image.shape
    assert np.array_equal(outs[0], outs[1])
    assert not np.array_equal(outs[0], image)  # 6 steps of Adam at 1e-3 moved it


def test_control_fits_on_pixels_alone(models, triples, tmp_path):
    """task_weight 0: no segmenter needed; through fit_with_task or fit, the same weights (same draws)."""
    control = TaskAware(**FIT, task_weight=0.0)
    assert not control.needs_segmenter and TaskAware(**FIT).needs_segmenter
    control.fit(*triples[:2], tmp_path / "plain", seed=0, progress=False)
    TaskAware(**FIT, task_weight=0.0).fit_with_task(*triples, TVMaskRCNN(threads=1), models["tv-mask-rcnn"],
                                                    tmp_path / "via", seed=0, progress=False)
    TaskAware(**FIT).fit_with_task(*triples, TVMaskRCNN(threads=1), models["tv-mask-rcnn"], tmp_path / "task",
                                   seed=0, progress=False)
    plain, via, task = _weights(tmp_path / "plain"), _weights(tmp_path / "via"), _weights(tmp_path / "task")
    assert all(torch.equal(plain[k], via[k]) for k in plain)
    assert not all(torch.equal(plain[k], task[k]) for k in plain)
    with pytest.raises(HarnessError, match="fit_with_task"):
        TaskAware(**FIT).fit(*triples[:2], tmp_path / "refused", seed=0, progress=False)


def test_a_segmenter_without_loss_fn_is_refused_by_the_adapter(registry, triples, tmp_path):
    threshold = registry.create("segmenter", "threshold", {})
    assert not threshold.has_loss_fn() and TVMaskRCNN.has_loss_fn()
    with pytest.raises(HarnessError, match="'threshold'.*loss_fn|loss_fn.*'threshold'"):
        TaskAware(**FIT).fit_with_task(*triples, threshold, tmp_path, tmp_path / "fit", seed=0, progress=False)


# -- planning -------------------------------------------------------------------------------------
def _plan(tmp_path, registry, dataset, segmenters, adapters):
    cfg = matrix_config(dataset, segmenters=segmenters, adapters=adapters,
                        degradations=[{"name": "gaussian_noise", "severities": [3]}])
    tmp_path.mkdir(parents=True, exist_ok=True)
    return matrix.plan(config.load(write_config(tmp_path / "m.yaml", cfg)), registry, Store(tmp_path / "cache"),
                       progress=False)


def _fits(p):
    return {c.labels["segmenter"] + "/" + c.labels["adapter"]: p.stages[p.stages[c.stages["adapt"]].inputs["fit"]]
            for c in p.cells if "fit" in p.stages[c.stages["adapt"]].inputs}


def test_plan_fits_once_per_trained_model(registry, dataset, tmp_path):
    segs = [{"name": "tv-mask-rcnn", "profile": "tiny", "label": "a", "params": {"max_iters": 2}},
            {"name": "tv-mask-rcnn", "profile": "tiny", "label": "b", "params": {"max_iters": 3}}]
    ads = [{"name": "taskaware", "label": "task", "params": {"iterations": 2}},
           {"name": "taskaware", "label": "control", "params": {"iterations": 2, "task_weight": 0}}]
    p = _plan(tmp_path, registry, dataset, segs, ads)
    fits = _fits(p)
    trains = {c.labels["segmenter"]: c.stages["train"] for c in p.cells}
    for seg in ("a", "b"):
        assert fits[f"{seg}/task"].inputs["model"] == trains[seg]
        assert fits[f"{seg}/task"].spec["segmenter"]["name"] == "tv-mask-rcnn"
        assert "model" not in fits[f"{seg}/control"].inputs
    assert fits["a/task"].key != fits["b/task"].key  # a new model is a new fit
    assert fits["a/control"].key == fits["b/control"].key  # the control needs none: one fit for both
    # the same segmenter planned again gives the same key (nothing but the model's key changed it)
    again = _fits(_plan(tmp_path / "again", registry, dataset, segs[:1], ads[:1]))
    assert again["a/task"].key == fits["a/task"].key


def test_plan_refuses_a_segmenter_without_loss_fn(registry, dataset, tmp_path):
    with pytest.raises(HarnessError) as err:
        _plan(tmp_path, registry, dataset, [{"name": "threshold", "profile": "tiny"}], ["taskaware"])
    message = str(err.value)
    assert "\n" not in message and "'taskaware'" in message and "threshold" in message and "loss_fn" in message
    _plan(tmp_path, registry, dataset, [{"name": "threshold", "profile": "tiny"}],
          [{"name": "taskaware", "params": {"task_weight": 0}}])  # the control plans anywhere


def test_matrix_runs_a_task_fit_end_to_end(registry, dataset, tmp_path):
    """train -> fit through the model (its folder, the segmenter and the labels reach fit_with_task) -> adapt ->
    predict -> evaluate, on a 2-iteration tiny torchvision model."""
    cfg = matrix_config(dataset, segmenters=[{"name": "tv-mask-rcnn", "profile": "tiny",
                                              "params": {"max_iters": 2, "threads": 1}}],
                        adapters=[{"name": "taskaware", "params": {**FIT, "iterations": 2}}],
                        degradations=[{"name": "gaussian_noise", "severities": [3]}], limit=2)
    summary = matrix.run(config.load(write_config(tmp_path / "m.yaml", cfg)), registry, out=tmp_path / "run",
                         store=Store(tmp_path / "cache"), progress=False)
    assert summary["cells"] == {"total": 1, "done": 1, "failed": 0}
    (meta,) = [json.loads(p.read_text()) for p in (tmp_path / "cache").glob("fit/*/model.json")]
    assert meta["through_segmenter"] and meta["images"] == len(image_records(dataset, "train"))
    budgets = json.loads((tmp_path / "run" / "run.json").read_text())["budgets"]
    (fit,) = [b for b in budgets if b["kind"] == "fit"]
    assert fit["segmenter"] == "tv-mask-rcnn" and fit["adapter"] == "taskaware" and fit["iterations"] == 2


def test_cli_fits_through_a_segmenter_from_a_prepared_dataset(models, triples, dataset, tmp_path, capsys):
    """`harness train adapter taskaware` outside a matrix: the A images are a prepared dataset's, their labels its
    annotations, the frozen segmenter --segmenter with --model; the fit equals the plugin API's."""
    from harness import cli

    source, target, annotations = triples
    a_dir, b_dir = source[0].parent, target[0].parent
    params = [f"--param={k}={v}" for k, v in FIT.items()]
    base = ["train", "adapter", "taskaware", "--source", str(a_dir), "--target", str(b_dir), *params]
    assert cli.main([*base, "--out", str(tmp_path / "x")]) == 2
    assert "fits through a segmenter's training loss: give --labels PREPARED_DIR" in capsys.readouterr().err
    other = tmp_path / "elsewhere"
    other.mkdir()
    for path in source:  # the same images, but not the prepared dataset's files
        write_image(other / path.name, read_image(path))
    assert cli.main([*base[:4], str(other), *base[5:], "--labels", str(dataset), "--segmenter", "tv-mask-rcnn",
                     "--model", str(models["tv-mask-rcnn"]), "--out", str(tmp_path / "y")]) == 2
    assert f"{other / source[0].name}: not an image of the prepared dataset" in capsys.readouterr().err
    assert cli.main([*base, "--labels", str(dataset), "--segmenter", "tv-mask-rcnn", "--model",
                     str(models["tv-mask-rcnn"]), "--out", str(tmp_path / "cli"), "--quiet"]) == 0
    assert "taskaware fitted on" in capsys.readouterr().out
    from harness.imageio import list_images

    labels = {p.stem: a for p, a in zip(source, annotations)}
    by_stem = {p.stem: p for p in list_images(a_dir)}
    b_paths = list_images(b_dir)  # the CLI's order: B as listed, each with its A original and its labels
    TaskAware(**FIT).fit_with_task([by_stem[p.stem] for p in b_paths], b_paths, [labels[p.stem] for p in b_paths],
                                   TVMaskRCNN(), models["tv-mask-rcnn"], tmp_path / "api", seed=0, progress=False)
    a = torch.load(tmp_path / "cli" / "weights.pt", weights_only=True)
    b = torch.load(tmp_path / "api" / "weights.pt", weights_only=True)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
