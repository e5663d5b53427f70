"""Content-addressed stage store: ``ROOT/<kind>/<key>/`` appears only when a stage is complete.

A stage writes into ``<key>.partial/`` and is published by one atomic rename, so a killed run never
leaves a half-written result that looks finished. Training keeps its ``.partial`` folder between
attempts so that it can resume from its own checkpoints.
"""
from __future__ import annotations

import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

DONE = "stage.json"


def default_root() -> Path:
    return Path(os.environ.get("HARNESS_CACHE", Path.home() / ".cache" / "harness" / "stages")).expanduser()


class Store:
    def __init__(self, root: str | Path | None = None):
        self.root = Path(root).expanduser() if root else default_root()

    def path(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def done(self, kind: str, key: str) -> bool:
        return (self.path(kind, key) / DONE).is_file()

    @contextmanager
    def writing(self, kind: str, key: str, record: dict, keep_partial: bool = False) -> Iterator[Path]:
        """Yield a scratch folder; on success write ``stage.json`` and publish it atomically."""
        final = self.path(kind, key)
        partial = final.with_name(key + ".partial")
        if partial.exists() and not keep_partial:
            shutil.rmtree(partial)
        partial.mkdir(parents=True, exist_ok=True)
        yield partial
        (partial / DONE).write_text(json.dumps(record, indent=1, sort_keys=True, default=str))
        if final.exists():  # another worker finished the same stage first: same key, same content
            shutil.rmtree(partial)
            return
        os.replace(partial, final)
