"""The feature gap: KID and FD32 against the source val images in the segmenter's own features, captured while
predicting; its stages in a matrix; its leaderboard section; the report's Spearman and selection regret."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from harness import config, matrix
from harness.cache import Store
from harness.evaluation.featuregap import (FEATURES_FILE, _kernel, feature_gap, frechet_pca, kid, load_features,
                                           standardise)
from harness.report.selection import selection, spearman_interval
from tests.conftest import matrix_config, write_config


# -- the estimators --------------------------------------------------------------------------
def _direct_mmd2(x, y):
    kxx, kyy, kxy = _kernel(x, x), _kernel(y, y), _kernel(x, y)
    m, n = len(x), len(y)
    return ((kxx.sum() - np.trace(kxx)) / (m * (m - 1)) + (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
            - 2 * kxy.mean())


def test_kid_is_the_unbiased_mmd_and_grows_with_the_shift():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(120, 8))
    same = rng.normal(size=(100, 8))
    moved = rng.normal(size=(100, 8)) + 0.5
    value, lo, hi = kid(same, ref)
    assert value == pytest.approx(_direct_mmd2(same, ref), rel=1e-9, abs=1e-12)
    assert math.isnan(lo) and math.isnan(hi)
    assert abs(value) < 0.02 < kid(moved, ref)[0]
    v, lo, hi = kid(moved, ref, np.random.default_rng(1), resamples=300)
    assert lo < v < hi and lo > 0


def test_a_resample_never_pairs_an_image_with_its_own_copy():
    """The counts formula equals the estimate over the resampled rows with every pair of copies of one image left
    out; and a resample's gap is centred on the estimate (copies paired with themselves would bias it upward)."""
    from harness.evaluation.featuregap import _mmd2

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(9, 4)), rng.normal(size=(7, 4)) + 0.3
    ix, iy = rng.integers(0, 9, 9), rng.integers(0, 7, 7)
    cx = np.bincount(ix, minlength=9)[None].astype(float)
    cy = np.bincount(iy, minlength=7)[None].astype(float)
    fast = _mmd2(_kernel(x, x), _kernel(y, y), _kernel(x, y), cx, cy)[0]

    def within(a, idx):
        k = _kernel(a[idx], a[idx])
        other = idx[:, None] != idx[None, :]
        return k[other].mean()

    direct = within(x, ix) + within(y, iy) - 2 * _kernel(x[ix], y[iy]).mean()
    assert fast == pytest.approx(direct, rel=1e-9)
    same = rng.normal(size=(150, 6))
    value, lo, hi = kid(same, rng.normal(size=(150, 6)), np.random.default_rng(0), resamples=400)
    assert lo < value < hi


def test_frechet_after_pca_sees_a_mean_shift_and_not_a_copy():
    rng = np.random.default_rng(0)
    ref = rng.normal(size=(200, 40))
    assert frechet_pca(ref, ref) == pytest.approx(0.0, abs=1e-6)
    shifted = ref + 1.0
    # the shift's projection on the reference's 32 leading axes, squared
    centre = ref.mean(axis=0)
    axes = np.linalg.svd(ref - centre, full_matrices=False)[2][:32].T
    expected = float(((np.ones(40) @ axes) ** 2).sum())
    assert frechet_pca(shifted, ref) == pytest.approx(expected, rel=1e-6)


def test_standardising_uses_the_reference_alone():
    ref = np.array([[0.0, 5.0], [2.0, 5.0]])
    x, r = standardise(np.array([[1.0, 6.0]]), ref)
    assert x.tolist() == [[0.0, 1.0]] and r[:, 1].tolist() == [0.0, 0.0]


def test_feature_gap_rows_and_bad_shapes():
    rng = np.random.default_rng(0)
    x, ref = rng.normal(size=(20, 5)), rng.normal(size=(30, 5))
    rows = feature_gap(x, ref, seed=4, resamples=50)
    assert [r["metric"] for r in rows] == ["KID", "KID_lo", "KID_hi", "FD32"]
    assert all(r["iou_type"] == "feature" for r in rows)
    assert rows == feature_gap(x, ref, seed=4, resamples=50), "the interval is a function of the seed"
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="differ in shape"):
        feature_gap(np.zeros((4, 3)), np.zeros((4, 2)), seed=0)
    with pytest.raises(HarnessError, match="2 or more images"):
        kid(np.zeros((1, 3)), np.zeros((4, 3)))


def test_spearman_interval():
    rho, lo, hi = spearman_interval([1, 2, 3, 4, 5, 6], [6, 5, 4, 3, 2, 1.5])
    assert rho == pytest.approx(-1.0) and lo <= rho <= hi
    rho, lo, hi = spearman_interval([1, 2, 3], [1, 2, 3])
    assert rho == pytest.approx(1.0) and math.isnan(lo)
    assert math.isnan(spearman_interval([1, 1, 1, 1], [1, 2, 3, 4])[0])


def test_selection_regret_and_flags(monkeypatch):
    rows = []
    for ad, k, ap in (("identity", 0.05, 0.30), ("a", 0.02, 0.34), ("b", 0.01, 0.31), ("c", 0.03, 0.29)):
        base = {"segmenter": "s", "profile": "p", "adapter": ad, "degradation": "d", "severity": 3.0, "seed": 0,
                "category": "all", "note": ""}
        rows += [{**base, "iou_type": "feature", "metric": "KID", "value": k},
                 {**base, "iou_type": "bbox", "metric": "AP", "value": ap}]
    df = selection(pd.DataFrame(rows), {"adapters": []}, iou_types=("bbox",))
    (r,) = df.itertuples(index=False)
    assert (r.chosen, r.best, r.adapters) == ("b", "a", 4)
    assert r.regret == pytest.approx(0.31 - 0.34)
    assert r.spearman == pytest.approx(1 - 6 * 16 / (4 * 15)), "rank differences 2, -2, -2, 2"
    import harness.report.selection as sel

    monkeypatch.setattr(sel, "flagged_adapters", lambda config: {"b"})
    (r,) = sel.selection(pd.DataFrame(rows), {}, iou_types=("bbox",)).itertuples(index=False)
    assert (r.chosen, r.regret, r.flagged) == ("a", 0.0, "b"), "a flagged adapter is never picked by its gap"


# -- capture in the predict pass ---------------------------------------------------------------
torch = pytest.importorskip("torch")


from tests.conftest import builtin_segmenters  # noqa: E402

SEGMENTERS = builtin_segmenters()


@pytest.fixture
def models(tiny_models):
    return tiny_models


@pytest.mark.parametrize("cls", SEGMENTERS)
def test_features_are_captured_in_the_predict_pass_whatever_the_path_and_batch(cls, models, dataset, tmp_path,
                                                                             monkeypatch):
    from harness.data.coco import image_records
    from plugins.segmenters import fastpredict

    records = image_records(dataset, "test")
    vectors = {}
    for batch in (4, 1):
        out, plain = tmp_path / f"b{batch}", tmp_path / f"plain{batch}.json"
        cls(predict_batch=batch, threads=2).predict(models[cls.name], records, dataset, plain, progress=False)
        cls(predict_batch=batch, threads=2).predict(models[cls.name], records, dataset, out / "p.json",
                                                    progress=False, features_out=out / FEATURES_FILE)
        assert (out / "p.json").read_bytes() == plain.read_bytes(), "capturing features changes no detection"
        ids, vectors[batch] = load_features(out / FEATURES_FILE)
        assert ids.tolist() == [r["id"] for r in records]
    assert vectors[4].shape[0] == len(records) and vectors[4].shape[1] > 0
    # convolutions round by batch size (predict_batch is in the key), so equal up to rounding, not bit for bit
    np.testing.assert_allclose(vectors[4], vectors[1], rtol=1e-4, atol=1e-5)
    assert not np.array_equal(vectors[4][0], vectors[4][1])
    from plugins.segmenters.features import FeatureTap

    tap = FeatureTap()
    cls(predict_batch=4, threads=2).records(models[cls.name], records, dataset, progress=False, reference=True,
                                           tap=tap)
    assert np.array_equal(np.stack([tap.rows[r["id"]] for r in records]), vectors[4]), "reference path = fast path"
    monkeypatch.setattr(fastpredict, "LANES", 1)
    tap = FeatureTap()
    cls(predict_batch=2, threads=2).records(models[cls.name], records, dataset, progress=False, tap=tap)
    assert np.array_equal(np.stack([tap.rows[r["id"]] for r in records]), vectors[4])


# -- in a matrix -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def gap_data(tmp_path_factory):
    from harness.data.synthetic import generate_synthetic

    out = tmp_path_factory.mktemp("gapdata") / "synthetic"
    generate_synthetic(out, progress=False, n_train=8, n_val=12, n_test=12, size=64, seed=1)
    return out


def _cfg(gap_data, **extra):
    return matrix_config(gap_data, segmenters=[{"name": "threshold-features", "profile": "tiny"}],
                         adapters=["identity", "smooth", "median"],
                         degradations=["none", {"name": "gaussian_noise", "severities": [2, 5]}], **extra)


def test_matrix_cells_get_a_feature_gap_that_grows_with_severity(registry, gap_data, tmp_path):
    from harness.leaderboard import tables

    cfg = config.load(write_config(tmp_path / "m.yaml", _cfg(gap_data)), registry=registry)
    store = Store(tmp_path / "cache")
    summary = matrix.run(cfg, registry, out=tmp_path / "run", store=store, progress=False)
    assert summary["cells"]["done"] == 9
    plan = matrix.plan(cfg, registry, store, progress=False)
    gaps = [s for s in plan.stages.values() if s.kind == "featuregap"]
    refs = {s.inputs["reference"] for s in gaps}
    assert len(gaps) == 9 and len(refs) == 1, "one val reference per trained model"
    (ref,) = refs
    assert plan.stages[ref].spec["split"] == "val" and plan.stages[ref].inputs["images"] == plan.stages[ref].inputs["data"]
    df = pd.read_csv(tmp_path / "run" / "results.csv")
    kid = df[(df["iou_type"] == "feature") & (df["metric"] == "KID") & (df["adapter"] == "identity")]
    by = dict(zip(kid["severity"], kid["value"]))
    assert by[0] < by[2] < by[5], by
    md = tables.render(tmp_path / "run")
    assert "## Feature gap" in md and "Δ KID ×10³ vs `identity`" in md
    assert "compare only within one trained model" in md


def test_report_writes_the_selection_table(registry, gap_data, tmp_path):
    from harness.report.build import write_report

    cfg = config.load(write_config(tmp_path / "m.yaml", _cfg(gap_data)), registry=registry)
    matrix.run(cfg, registry, out=tmp_path / "run", store=Store(tmp_path / "cache"), progress=False)
    board = write_report([tmp_path / "run"], resamples=20, examples=0, progress=False)
    sel = pd.read_csv(tmp_path / "run" / "selection.csv")
    assert set(sel["iou_type"]) == {"bbox", "segm"} and (sel["adapters"] == 3).all()
    assert (sel["regret"] <= 0).all()
    assert "Picking an adapter by its feature gap" in board.read_text()


def test_feature_gap_off_keeps_the_predict_keys(registry, gap_data, tmp_path):
    on = matrix.plan(config.load(write_config(tmp_path / "a.yaml", _cfg(gap_data)), registry=registry),
                     registry, Store(tmp_path / "c"), progress=False)
    off = matrix.plan(config.load(write_config(tmp_path / "b.yaml", _cfg(gap_data, feature_gap=False)),
                                  registry=registry), registry, Store(tmp_path / "c"), progress=False)
    plain = matrix.plan(config.load(write_config(tmp_path / "c.yaml", matrix_config(
        gap_data, adapters=["identity", "smooth", "median"],
        degradations=["none", {"name": "gaussian_noise", "severities": [2, 5]}])), registry=registry),
        registry, Store(tmp_path / "c"), progress=False)
    assert not any(s.kind == "featuregap" for s in off.stages.values())
    assert not any(s.kind == "featuregap" for s in plain.stages.values()), "a segmenter without capture: no gap"
    on_predicts = {k for k, s in on.stages.items() if s.kind == "predict"}
    off_predicts = {k for k, s in off.stages.items() if s.kind == "predict"}
    assert on_predicts.isdisjoint(off_predicts) and all("features" not in off.stages[k].spec for k in off_predicts)


def test_feature_gap_key_must_be_a_bool(registry, gap_data, tmp_path):
    from harness.errors import HarnessError

    with pytest.raises(HarnessError, match="feature_gap: expected true or false"):
        config.load(write_config(tmp_path / "m.yaml", _cfg(gap_data, feature_gap="yes")), registry=registry)
