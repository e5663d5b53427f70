"""What the learnt adapters share: image loading, channel handling, batched inference, resumable
checkpoints that load under ``torch.load(weights_only=True)``, and the loss log.

torch is imported inside the functions that use it: the plugin registry imports every adapter module,
and `harness plugins` should not pay for loading torch.
"""
from __future__ import annotations

import contextlib
import csv
import json
import re
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator

import cv2
import numpy as np

from harness.errors import HarnessError
from harness.imageio import read_image

if TYPE_CHECKING:
    import torch


def check_int(where: str, key: str, value: Any, lo: int = 0, none: bool = False) -> None:
    if none and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise HarnessError(f"{where}: '{key}' must be an integer >= {lo}{' or null' if none else ''}, got {value!r}")


def check_float(where: str, key: str, value: Any, lo: float = 0.0) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value < lo:
        raise HarnessError(f"{where}: '{key}' must be a number >= {lo}, got {value!r}")


def check_device(where: str, name: Any) -> None:
    """The device's spelling only: whether CUDA is there is checked where it is used (a plan made on a
    CPU machine may name the GPU that will run it)."""
    if not (name in ("auto", "cpu", "cuda") or (isinstance(name, str) and re.fullmatch(r"cuda:\d+", name))):
        raise HarnessError(f"{where}: 'device' must be one of auto, cpu, cuda, cuda:N, got {name!r}")


def resolve_device(name: str) -> torch.device:
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise HarnessError(f"param device: '{name}' asked for but CUDA is not available")
    return torch.device(name)


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Set torch's CPU threads for a block (0 = leave torch's default), restoring them after."""
    import torch

    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


@contextlib.contextmanager
def exact_convolutions(device: torch.device) -> Iterator[None]:
    """No TF32 on CUDA for a block: with it, cuDNN's choice of kernel per batch size moves outputs by
    ~1e-3, and an image's result would depend on what it was batched with."""
    import torch

    if device.type != "cuda":
        yield
        return
    before = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = before


def check_images(adapter: str, images: list[np.ndarray], net: Any) -> None:
    if net is None:
        raise HarnessError(f"adapter '{adapter}': not loaded (call load(fit_dir) first)")
    for im in images:
        if im.dtype != np.uint8 or not (im.ndim == 2 or (im.ndim == 3 and im.shape[2] in (1, 3))):
            raise HarnessError(f"adapter '{adapter}': expects uint8 HxW or HxWx3 images, got {im.dtype} {im.shape}")


def as_channels(image: np.ndarray, channels: int) -> np.ndarray:
    """HxWxC uint8 with C = ``channels``: colour becomes luma for a 1-channel net, gray is replicated
    for a 3-channel one (the seed report's setting)."""
    if image.ndim == 2:
        image = image[:, :, None]
    if image.shape[2] == channels:
        return image
    if channels == 1:
        return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)[:, :, None]
    return np.repeat(image, channels, axis=2)


def load_images(paths: list[Path], channels: int) -> list[np.ndarray]:
    return [as_channels(read_image(p), channels) for p in paths]


def subset(paths: list[Path], cap: int | None, rng: np.random.Generator) -> list[Path]:
    """At most ``cap`` of ``paths``, a seeded random choice in their original order."""
    paths = list(paths)
    if cap is None or len(paths) <= cap:
        return paths
    keep = np.sort(rng.choice(len(paths), size=int(cap), replace=False))
    return [paths[i] for i in keep]


def to_tensor(images: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """uint8 HxWxC images of one size -> float NCHW in [-1, 1]."""
    import torch

    x = torch.from_numpy(np.stack(images)).to(device)
    return x.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Float images in [-1, 1] -> uint8, rounding to nearest."""
    return np.clip(np.rint((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def pad_to_multiple(x: torch.Tensor, multiple: int, minimum: int = 0) -> torch.Tensor:
    """Pad bottom/right to a multiple of ``multiple`` (and at least ``minimum``, itself a multiple) by reflection, or by
    replication where an image is too small to reflect, so that a net with stride-2 stages returns the
    input size after cropping back."""
    import torch

    h, w = x.shape[-2:]
    ph = max(h + -h % multiple, minimum) - h
    pw = max(w + -w % multiple, minimum) - w
    if not (ph or pw):
        return x
    mode = "reflect" if ph < h and pw < w else "replicate"
    return torch.nn.functional.pad(x, (0, pw, 0, ph), mode=mode)


def run_batched(images: list[np.ndarray], batch: int,
                forward: Callable[[list[np.ndarray]], list[np.ndarray]]) -> list[np.ndarray]:
    """Apply ``forward`` to same-shape groups of at most ``batch`` images; results in input order."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(im.shape, []).append(i)
    out: list[np.ndarray | None] = [None] * len(images)
    for idx in groups.values():
        for start in range(0, len(idx), max(1, int(batch))):
            chunk = idx[start:start + max(1, int(batch))]
            for i, res in zip(chunk, forward([images[i] for i in chunk])):
                out[i] = res
    return out  # type: ignore[return-value]


def split_channels(images: list[np.ndarray], channels: int) -> tuple[list[np.ndarray], Callable]:
    """Map the caller's images onto what a ``channels``-channel net takes, and back.

    A 1-channel net adapts each channel of a colour image as its own gray image (so colour survives);
    a 3-channel net gets gray input replicated and returns the mean of its three output channels.
    Returns the HxWxC net inputs and a function turning the net outputs (same order) into results.
    """
    inputs: list[np.ndarray] = []
    spans: list[tuple[int, int, bool]] = []
    for im in images:
        gray = im.ndim == 2
        if channels == 1 and not gray:
            parts = [im[:, :, c:c + 1] for c in range(im.shape[2])]
        else:
            parts = [as_channels(im, channels)]
        spans.append((len(inputs), len(parts), gray))
        inputs += parts

    def merge(outputs: list[np.ndarray]) -> list[np.ndarray]:
        results = []
        for start, n, gray in spans:
            parts = outputs[start:start + n]
            if gray:
                results.append(parts[0].mean(axis=2) if parts[0].shape[2] > 1 else parts[0][:, :, 0])
            else:
                results.append(np.concatenate(parts, axis=2) if n > 1 else parts[0])
        return results

    return inputs, merge


def random_crop(image: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A ``size`` square crop at a random place (the image is edge-padded first if smaller)."""
    h, w = image.shape[:2]
    if h < size or w < size:
        image = np.pad(image, ((0, max(0, size - h)), (0, max(0, size - w)), (0, 0)), mode="edge")
        h, w = image.shape[:2]
    y = int(rng.integers(0, h - size + 1))
    x = int(rng.integers(0, w - size + 1))
    return image[y:y + size, x:x + size]


# -- checkpoints ---------------------------------------------------------------------------------

def rng_state(rng: np.random.Generator) -> dict[str, Any]:
    """The fit's only RNG state (weights are drawn from their own seeded generator, and nothing in the
    loop draws from torch's), as JSON text: numpy's PCG64 state holds 128-bit ints."""
    return {"numpy": json.dumps(rng.bit_generator.state)}


def set_rng_state(rng: np.random.Generator, state: dict[str, Any]) -> None:
    rng.bit_generator.state = json.loads(state["numpy"])


def load_weights(path: Path, device: torch.device | str = "cpu") -> Any:
    """Weights-only load (never ``weights_only=False``): a fit_dir from elsewhere cannot run code."""
    from harness import checkpoints

    if not path.is_file():
        raise HarnessError(f"{path}: not found (was the adapter fitted into this folder?)")
    return checkpoints.load(path, device)


def load_fitted(adapter: str, fit_dir: Path | None, weights: str, device: torch.device,
                build: Callable[[dict], Any]) -> tuple[Any, dict[str, Any]]:
    """The network a fit left in ``fit_dir``, in eval mode on ``device``, and its ``model.json``;
    ``build(meta)`` makes the empty network from what ``model.json`` says."""
    if fit_dir is None:
        raise HarnessError(f"adapter '{adapter}': needs a fit folder; fit the adapter first")
    fit_dir = Path(fit_dir)
    meta_path = fit_dir / "model.json"
    if not meta_path.is_file():
        raise HarnessError(f"{meta_path}: not found; fit the adapter first (or the fit did not finish)")
    meta = json.loads(meta_path.read_text())
    net = build(meta)
    try:
        net.load_state_dict(load_weights(fit_dir / weights, device))
    except RuntimeError as exc:
        raise HarnessError(f"{fit_dir / weights}: does not match {meta_path.name} "
                           f"({str(exc).splitlines()[0]})") from None
    return net.to(device).eval(), meta


def fit_meta(fit_dir: Path) -> dict[str, Any] | None:
    """A finished fit's ``model.json`` (None when there is none: the fit did not finish)."""
    path = Path(fit_dir) / "model.json"
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise HarnessError(f"{path}: not valid JSON ({exc.msg})") from None


class LossLog:
    """losses.csv, one row per logged interval; on resume the rows after the checkpoint are dropped
    (they were written after the last save, and the resumed fit writes them again)."""

    def __init__(self, path: Path, columns: list[str], resume_at: int | None):
        self.path, self.columns = path, columns
        rows = []
        if resume_at is not None and path.is_file():
            with path.open(newline="") as f:
                rows = [r for r in csv.DictReader(f) if int(r["iteration"]) <= resume_at]
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)

    def append(self, row: dict[str, float]) -> None:
        with self.path.open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.columns).writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in row.items()})


def read_losses(path: Path) -> list[dict[str, float]]:
    with Path(path).open(newline="") as f:
        return [{k: float(v) for k, v in r.items()} for r in csv.DictReader(f)]


class FitLoop:
    """A resumable training loop: ``step`` until ``total`` iterations, the mean losses of every
    ``log_every`` iterations appended to losses.csv, and every ``checkpoint_every`` iterations the whole
    state (``model_state`` plus the counters, unlogged loss sums and RNG) saved to checkpoint.pt through
    ``save``. ``run`` resumes from checkpoint.pt when present; a checkpoint whose ``fingerprint`` (what
    defines the fit: settings, seed) differs is refused rather than silently continued."""

    losses: tuple[str, ...] = ()

    def __init__(self, fit_dir: Path, device: torch.device, rng: np.random.Generator, fingerprint: dict[str, Any],
                 total: int, log_every: int, checkpoint_every: int, save: Callable[[dict, Path], None]):
        self.fit_dir, self.device, self.rng, self.fingerprint = fit_dir, device, rng, fingerprint
        self.total, self.log_every, self.checkpoint_every, self.save = total, log_every, checkpoint_every, save
        self.iteration, self.seconds = 0, 0.0
        self.pending: dict[str, float] = {}

    @property
    def checkpoint_path(self) -> Path:
        return self.fit_dir / "checkpoint.pt"

    def model_state(self) -> dict[str, Any]:
        raise NotImplementedError

    def load_model_state(self, state: dict[str, Any]) -> None:
        raise NotImplementedError

    def step(self) -> dict[str, float]:
        raise NotImplementedError

    def lr(self) -> float:
        raise NotImplementedError

    def state(self) -> dict[str, Any]:
        return {"format": 1, "fingerprint": self.fingerprint, "iteration": self.iteration, "seconds": self.seconds,
                "pending": dict(self.pending), "rng": rng_state(self.rng), **self.model_state()}

    def restore(self) -> None:
        state = load_weights(self.checkpoint_path, self.device)
        if state.get("fingerprint") != self.fingerprint:
            raise HarnessError(f"{self.checkpoint_path}: written by a fit with other settings or seed; "
                               "delete it to fit afresh")
        self.load_model_state(state)
        set_rng_state(self.rng, state["rng"])
        self.iteration, self.seconds = int(state["iteration"]), float(state["seconds"])
        self.pending = dict(state["pending"])

    def run(self, progress: bool, desc: str) -> dict[str, float] | None:
        """Train to the end; returns the last logged row."""
        from tqdm import tqdm

        from harness import atomic

        atomic.remove_leftovers(self.fit_dir)
        resumed = self.checkpoint_path.is_file()
        if resumed:
            self.restore()
        log = LossLog(self.fit_dir / "losses.csv", ["iteration", *self.losses, "lr", "seconds"],
                      self.iteration if resumed else None)
        last = None
        with tqdm(total=self.total, initial=self.iteration, desc=desc, unit="it", leave=False,
                  disable=not progress) as bar:
            while self.iteration < self.total:
                start = time.perf_counter()
                lr = self.lr()
                losses = self.step()
                self.seconds += time.perf_counter() - start
                self.iteration += 1
                for k, v in losses.items():
                    self.pending[k] = self.pending.get(k, 0.0) + v
                self.pending["n"] = self.pending.get("n", 0.0) + 1
                bar.update(1)
                if self.iteration % self.log_every == 0 or self.iteration == self.total:
                    n = self.pending.pop("n")
                    last = {"iteration": self.iteration, **{k: self.pending[k] / n for k in self.losses},
                            "lr": lr, "seconds": round(self.seconds, 3)}
                    log.append(last)
                    bar.set_postfix({k: f"{last[k]:.4g}" for k in self.losses[:2]})
                    self.pending = {}
                if self.iteration % self.checkpoint_every == 0 and self.iteration < self.total:
                    self.save(self.state(), self.checkpoint_path)
        return last
