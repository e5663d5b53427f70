"""Base classes that plugins subclass. The host only ever talks to plugins through these methods.

Each class carries ``name``, ``version`` and ``params`` (the parameter schema: every accepted key
with its default). Instances are built from plain, JSON-able parameters so that a matrix cell can be
shipped to another process or machine and rebuilt there.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from harness.errors import HarnessError


#: what ``Plugin.budget`` may report of a training or fit (``budget.json`` in its stage folder): iterations done,
#: the profile's own schedule (before any ``max_iters``-style override), samples per iteration, images seen
#: (iterations x batch), the training crop or input side in px, training wall seconds, and the device it ran on
BUDGET_KEYS = ("iterations", "schedule_iterations", "batch", "images_seen", "crop", "seconds", "device")


class Plugin:
    kind: ClassVar[str] = "plugin"
    name: ClassVar[str] = ""
    version: ClassVar[str] = "0"
    params: ClassVar[dict[str, Any]] = {}
    #: one line for `harness plugins`
    summary: ClassVar[str] = ""
    #: params that change how fast it runs, never what it computes (device, threads, workers): kept out of
    #: the identity, so changing them reuses cached results
    runtime_params: ClassVar[tuple[str, ...]] = ()
    #: params added after a release: left out of the identity while at their default, so adding one keeps
    #: every cached result of the plugin valid
    later_params: ClassVar[tuple[str, ...]] = ()
    #: which split the defaults were tuned on by looking at data, e.g. "NEU-Seg val (48 images)"; None = nothing
    #: tuned. The leaderboard's provenance prints it, so that a reader sees whether a result saw test data
    selected_on: ClassVar[str | None] = None
    #: ``selected_on`` of earlier versions whose tuned defaults differed, by version: what their runs used
    selected_before: ClassVar[dict[str, str]] = {}

    def __init__(self, **params: Any):
        unknown = sorted(set(params) - set(self.params))
        if unknown:
            known = ", ".join(sorted(self.params)) or "none"
            raise HarnessError(f"{self.kind} '{self.name}': unknown parameter '{unknown[0]}' (known: {known})")
        self.config: dict[str, Any] = {**self.params, **params}

    def identity(self) -> dict[str, Any]:
        """What makes this instance's output what it is: part of every cache key it feeds."""
        params = {k: v for k, v in self.config.items() if k not in self.runtime_params
                  and not (k in self.later_params and v == self.params[k])}
        return {"kind": self.kind, "name": self.name, "version": self.version, "params": params}

    def runtime(self) -> dict[str, Any]:
        """The runtime params set away from their defaults: a stage carries them beside its key, not in it."""
        return {k: self.config[k] for k in self.runtime_params if self.config[k] != self.params[k]}

    def budget(self, out_dir: Path) -> dict[str, Any] | None:
        """Optional: what the ``train`` or ``fit`` that just filled ``out_dir`` cost, as any of ``BUDGET_KEYS``
        (read from what it left there), for the leaderboard's budget table. The host writes it to ``budget.json``
        beside it, taking ``seconds`` from the stage's own clock when absent; None (the default): seconds only."""
        return None

    @classmethod
    def loss_log(cls, out_dir: Path):
        """Optional: the loss curve of the ``train`` or ``fit`` that filled ``out_dir``, as a pandas DataFrame with
        an ``iteration`` column, one column per logged loss and optionally ``lr`` (``harness report`` plots it).
        The default reads ``losses.csv`` there, which the built-in adapters' fits write; None: nothing logged."""
        path = Path(out_dir) / "losses.csv"
        return read_loss_csv(path) if path.is_file() else None


def read_loss_csv(path: Path):
    """A loss log written as CSV (iteration, LOSS..., lr, seconds) as a DataFrame; an unreadable file is a
    one-line error naming it."""
    import pandas as pd

    try:
        return pd.read_csv(path)
    except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError) as exc:
        raise HarnessError(f"{path}: not a readable loss log ({type(exc).__name__})") from None


class Degradation(Plugin):
    """Turns a clean image into a degraded one.

    ``apply`` must use only ``rng`` for randomness: the host seeds it from (image id, plugin,
    severity, seed), which makes the output independent of processing order and process.
    """

    kind = "degradation"
    severities: ClassVar[tuple[int, ...]] = (1, 2, 3, 4, 5)

    def apply(self, image: np.ndarray, severity: int, rng: np.random.Generator) -> np.ndarray:
        raise NotImplementedError


class Adapter(Plugin):
    """Maps a domain-B image toward domain A, keeping size, dtype (uint8) and channel count.

    Adapters with ``trainable = True`` are fitted once before use; the fitted artifact lives in
    ``fit_dir`` and is cached under a hash of (adapter identity, fit data, seed). ``fit_data`` says what
    the host hands to ``fit``:

    - ``"source"``: domain-A training images only (``target`` is empty), e.g. reference statistics;
    - ``"unpaired"``: A images and degraded B images made from a *disjoint* set of training images;
    - ``"paired"``: ``target[i]`` is the degraded version of ``source[i]`` (a supervised restorer).
    """

    kind = "adapter"
    trainable: ClassVar[bool] = False
    fit_data: ClassVar[str] = "unpaired"
    #: parameters that make ``fit`` take seconds on tiny images: what contract tests and scaffolds use
    quick_params: ClassVar[dict[str, Any]] = {}
    #: its fit optimises the segmenter's own features or loss (e.g. task-aware restoration): its feature gap is no
    #: independent, label-free measure, so `harness report` flags it and never selects it by that gap
    optimises_segmenter_features: ClassVar[bool] = False
    #: its fit needs a trained segmenter (``Segmenter.loss_fn``) and the training images' labels: the host plans
    #: one fit per trained model (input ``model``, the segmenter's train stage, so a new model means a new fit)
    #: and calls ``fit_with_task`` instead of ``fit``. An instance may turn it off (e.g. its control, task weight 0)
    needs_segmenter: ClassVar[bool] = False

    def fit(self, source: list[Path], target: list[Path], fit_dir: Path, seed: int, progress: bool = True) -> None:
        raise NotImplementedError(f"adapter '{self.name}' is not trainable")

    def fit_with_task(self, source: list[Path], target: list[Path], annotations: list[list[dict[str, Any]]],
                      segmenter: "Segmenter", model_dir: Path, fit_dir: Path, seed: int, progress: bool = True) -> None:
        """``fit`` for an adapter that ``needs_segmenter``: also ``annotations[i]`` (the COCO annotations of
        ``source[i]``), the segmenter plugin and its trained model folder (for ``segmenter.loss_fn``)."""
        raise NotImplementedError(f"adapter '{self.name}' does not fit through a segmenter")

    def load(self, fit_dir: Path | None) -> None:
        """Prepare for ``adapt`` (load what ``fit`` left in ``fit_dir`` when trainable)."""

    def adapt(self, image: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def adapt_batch(self, images: list[np.ndarray]) -> list[np.ndarray]:
        """Adapt several images at once; networks override this to batch (images may differ in size)."""
        return [self.adapt(im) for im in images]


class Segmenter(Plugin):
    """Instance segmenter: trains on a prepared COCO dataset, predicts COCO results JSON."""

    kind = "segmenter"
    #: profile name -> one-line description
    profiles: ClassVar[dict[str, str]] = {}
    #: the checkpoint ``train`` leaves in its model folder, which another training can start from (``init``)
    model_file: ClassVar[str] = "model.pth"
    #: ``predict`` takes ``features_out``: a path where it also writes each image's pooled backbone/FPN features
    #: (``ids``, N x D ``features`` in an .npz), captured in the same pass: what a cell's feature gap compares
    captures_features: ClassVar[bool] = False

    def loss_fn(self, model_dir: Path, device: Any) -> Callable[[Any, list[dict[str, Any]]], Any]:
        """Optional capability (``has_loss_fn``), what task-aware adapters fit through: the trained model in
        ``model_dir``, frozen on ``device``, as a differentiable function ``loss(images, targets)`` -> its own
        training loss (RPN + box + mask, summed) as a scalar tensor whose gradient flows to ``images``.

        ``images``: float N x C x H x W in [0, 1] (C = 1 gray, or 3 in the harness's BGR order), on ``device``;
        ``targets``: one dict per image, COCO-style in that image's pixels: ``boxes`` (K x 4 float x1 y1 x2 y2),
        ``labels`` (K int64 COCO category ids of the training set) and ``masks`` (K x H x W uint8). The model's
        weights do not learn (``requires_grad`` off) and its norm layers stay in eval mode, so neither weights
        nor buffers change; the samplers' draws come from torch's global RNG, so a caller that seeds it before
        each call gets a deterministic function. The model is at ``loss.model``."""
        raise HarnessError(f"segmenter '{self.name}' has no loss_fn (the capability task-aware adapters fit through)")

    @classmethod
    def has_loss_fn(cls) -> bool:
        """Whether this segmenter implements ``loss_fn``."""
        return cls.loss_fn is not Segmenter.loss_fn

    def check_profile(self, profile: str) -> None:
        if profile not in self.profiles:
            raise HarnessError(
                f"segmenter '{self.name}': unknown profile '{profile}' (known: {', '.join(self.profiles)})"
            )

    def model_fingerprint(self, profile: str) -> str | None:
        """A hash of what defines the model beyond ``params`` (e.g. the config file a profile names), so that
        editing it changes the training stage's cache key. None when ``params`` say it all."""
        return None

    def train(self, data_dir: Path, out_dir: Path, profile: str, seed: int, init: str | None = None) -> None:
        """Train on ``data_dir/train.json`` (and ``val.json`` if present); leave the model in ``out_dir``."""
        raise NotImplementedError

    def predict(self, model_dir: Path, images: list[dict], image_root: Path, out_json: Path,
                progress: bool = True, features_out: Path | None = None) -> None:
        """Write COCO results (``image_id``, ``category_id``, ``bbox``, ``score``, RLE ``segmentation``)
        for ``images`` (COCO image records whose ``file_name`` is relative to ``image_root``); with
        ``features_out`` (only passed when ``captures_features``), also the images' pooled features."""
        raise NotImplementedError


class Executor(Plugin):
    """Runs a matrix's stages: in this process, in a process pool, on a cluster.

    ``run`` gets stage dicts (``harness.stages.Stage.to_dict()``) in a topological order and the context dict,
    executes each with ``harness.stages.execute`` once the stages it reads are done, and hands every result to
    ``on_result`` in the calling process as it arrives. A stage whose input failed is not executed: its result
    has status ``skipped`` and ``cause`` naming the failed input. Executors never change what is computed (a
    stage's output is a function of its key), only where and when, so their params are all runtime.
    """

    kind = "executor"

    def run(self, stages: list[dict[str, Any]], context: dict[str, Any],
            on_result: Callable[[dict[str, Any]], None]) -> None:
        raise NotImplementedError
