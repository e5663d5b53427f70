"""Content-addressed stage store: ``ROOT/<kind>/<key>/`` appears only when a stage is complete.

A stage writes into ``<key>.partial/`` and is published by one atomic rename, so a killed run never
leaves a half-written result that looks finished. Training keeps its ``.partial`` folder between
attempts so that it can resume from its own checkpoints.

``ROOT/.lock`` orders writers and pruners: ``harness run`` holds it shared while it writes stages and
``harness cache gc`` takes it exclusively, so a gc never deletes what a running matrix is making.
"""
from __future__ import annotations

import fcntl
import functools
import inspect
import json
import os
import shutil
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from harness.errors import HarnessError

DONE = "stage.json"
LOCK = ".lock"


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
    def lock(self, exclusive: bool = False, wait: bool = True, required: bool = True,
             on_wait: Callable[[], None] | None = None) -> Iterator[None]:
        """Hold ``ROOT/.lock`` (``flock``): shared by writers, exclusive for ``gc``. Without ``wait`` a busy
        lock is a HarnessError; without ``required`` a file system that cannot lock only warns."""
        path = self.root / LOCK
        fd = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
            mode = fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                if not wait:
                    os.close(fd)
                    raise HarnessError(f"{path}: the cache is in use by a running `harness run` or gc "
                                       "(retry when it ends, or pass --wait)") from None
                if on_wait:
                    on_wait()
                fcntl.flock(fd, mode)
        except OSError as exc:
            if required:
                if fd is not None:
                    os.close(fd)
                raise HarnessError(f"{path}: cannot lock the cache ({exc.strerror})") from None
            print(f"harness: warning: {path}: cannot lock the cache ({exc.strerror}); "
                  "`harness cache gc` could delete this run's new stages", file=sys.stderr)
        try:
            yield
        finally:
            if fd is not None:
                os.close(fd)

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


def holding_lock(fn):
    """Run ``fn`` (which takes a ``store=`` argument, None meaning the default store) holding that store's
    shared lock, so that ``harness cache gc`` waits until it has finished writing."""
    signature = inspect.signature(fn)

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        bound = signature.bind(*args, **kwargs)
        store = bound.arguments.get("store") or Store()
        bound.arguments["store"] = store
        wait = lambda: print(f"harness: waiting for `harness cache gc` on {store.root} to finish",  # noqa: E731
                             file=sys.stderr)
        with store.lock(required=False, on_wait=wait):
            return fn(*bound.args, **bound.kwargs)

    return wrapper
