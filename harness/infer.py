"""The complete pipeline on loose images: image -> adapter -> segmenter -> overlay PNG + COCO JSON per image.

What an inspection engineer runs on a handful of new camera frames with a model the harness trained, to see
what a matrix cell means in pictures. The segmenter reads adapted images from a scratch folder exactly as
the predict stage does, so a cell's numbers and these pictures come from the same code.
"""
from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from harness.data.coco import write_json_atomic
from harness.errors import HarnessError
from harness.imageio import read_image, write_image


def model_folder(checkpoint: str | Path) -> Path:
    """A model folder (``harness train segmenter --out``, or a cached train stage), or a checkpoint file in one."""
    path = Path(checkpoint).expanduser()
    folder = path.parent if path.is_file() else path
    if not folder.is_dir():
        raise HarnessError(f"{path}: checkpoint not found (give the folder `harness train segmenter` wrote)")
    return folder


def _class_names(model: Path) -> list[str]:
    """``classes.json`` (what the built-in segmenters write) or, without one, the category ids the model emits."""
    path = model / "classes.json"
    if not path.is_file():
        return []
    try:
        names = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise HarnessError(f"{path}: malformed JSON ({exc.msg})") from None
    if not isinstance(names, list):
        raise HarnessError(f"{path}: expected a list of class names")
    return [str(n) for n in names]


def infer(images: list[str | Path], adapter, segmenter, checkpoint: str | Path, out: str | Path,
          fit: str | Path | None = None, score_thr: float = 0.5, progress: bool = True) -> list[Path]:
    """Run ``adapter`` then ``segmenter`` on ``images``; write ``<stem>.png`` and ``<stem>.json`` per image."""
    from harness.report.plots import overlay

    model = model_folder(checkpoint)
    classes = _class_names(model)
    if adapter.trainable and fit is None:
        raise HarnessError(f"adapter '{adapter.name}' is trainable: give --fit, the folder its fit wrote")
    adapter.load(Path(fit) if fit else None)
    out = Path(out)
    stems = [Path(p).stem for p in images]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise HarnessError(f"two input images are named '{dupes[0]}': their outputs would overwrite each other")
    sources = [read_image(p) for p in images]
    adapted = adapter.adapt_batch(sources)
    with tempfile.TemporaryDirectory(prefix="harness-infer-") as tmp:
        records = []
        for i, (path, image) in enumerate(zip(images, adapted), 1):
            name = f"{i:05d}.png"
            write_image(Path(tmp) / name, image)
            records.append({"id": i, "file_name": name, "width": int(image.shape[1]), "height": int(image.shape[0]),
                            "source": str(Path(path).resolve())})
        segmenter.predict(model, records, Path(tmp), Path(tmp) / "predictions.json", progress=progress)
        predictions = json.loads((Path(tmp) / "predictions.json").read_text())
    ids = sorted({int(p["category_id"]) for p in predictions})
    categories = ([{"id": i, "name": name} for i, name in enumerate(classes, 1)] if classes
                  else [{"id": i, "name": str(i)} for i in ids])
    written = []
    for rec, image, stem in zip(records, adapted, stems):
        mine = [p for p in predictions if p["image_id"] == rec["id"]]
        anns = [{**p, "id": j, "iscrowd": 0, "area": float(p["bbox"][2] * p["bbox"][3])} for j, p in enumerate(mine, 1)]
        coco: dict[str, Any] = {
            "info": {"adapter": adapter.identity(), "segmenter": segmenter.identity(), "model": str(model.resolve()),
                     "score_thr_of_overlay": score_thr},
            "images": [{"id": rec["id"], "file_name": rec["source"], "width": rec["width"], "height": rec["height"]}],
            "annotations": anns, "categories": categories}
        write_json_atomic(out / f"{stem}.json", coco, indent=1)
        title = f"{stem}: {adapter.name} -> {segmenter.name}, score >= {score_thr}"
        written.append(overlay(image, mine, out / f"{stem}.png", {c["id"]: c["name"] for c in categories},
                               score_thr=score_thr, title=title))
    return written
