"""What makes an interrupted mmengine training resume to the same bits as one that ran straight through.

mmengine's resume restores weights, optimiser, schedulers and iteration, and replays the data loader up to the
checkpoint's iteration (so the sampler, the aspect-ratio batch buckets and the data-loader workers' own seeded
streams are where they were). It does not restore the main process's global random streams: the RPN/RoI
samplers' ``torch.randperm`` and, with no workers, the augmentation's ``np.random``. Here:

- every checkpoint carries those streams as captured at the save (``harness.rngstate``), and they are put back
  after the replay, right before the next batch is drawn, which is where the straight run was when it saved;
- checkpoints are written to a temporary file and renamed (mmengine writes in place, and with
  ``max_keep_ckpts=1`` deletes the previous one before the new one is complete); two are kept;
- the resume point is the newest complete ``iter_N.pth``, not mmengine's ``last_checkpoint`` pointer, which
  is itself written in place.
"""
from __future__ import annotations

import re
import zipfile
from pathlib import Path
from typing import Any

from harness import rngstate
from harness.errors import HarnessError

BACKEND = "harness_atomic"
KEEP = 2


def configure(cfg) -> None:
    """Atomic checkpoints, two kept, each carrying the random streams."""
    register()
    hook = cfg.default_hooks.checkpoint
    hook.max_keep_ckpts = KEEP
    hook.save_last = True
    hook.backend_args = dict(backend=BACKEND)
    cfg.custom_hooks = [*cfg.get("custom_hooks", []), dict(type="ExactResumeHook")]


def resuming(cfg, work_dir: Path):
    """``cfg`` set to resume from the newest complete checkpoint in ``work_dir`` (a copy), or ``cfg`` itself
    when there is none. The copy stays out of the exported model config, which is the same either way."""
    import copy

    from harness import atomic

    atomic.remove_leftovers(work_dir)
    resume = latest_checkpoint(work_dir)
    if resume is None:
        return cfg
    cfg = copy.deepcopy(cfg)
    cfg.resume, cfg.load_from = True, str(resume)
    for hook in cfg.custom_hooks:
        if hook["type"] == "ExactResumeHook":
            hook["resuming"] = True
    return cfg


def latest_checkpoint(work_dir: Path) -> Path | None:
    """The highest-iteration ``iter_N.pth`` whose zip directory is whole (torch.save writes a zip archive)."""
    found = []
    for path in Path(work_dir).glob("iter_*.pth"):
        match = re.fullmatch(r"iter_(\d+)\.pth", path.name)
        if match:
            found.append((int(match.group(1)), path))
    for _, path in sorted(found, reverse=True):
        try:
            with zipfile.ZipFile(path):
                return path
        except (zipfile.BadZipFile, OSError):
            continue
    return None


class _RestoreAfterReplay:
    """The loop's data iterator, putting the checkpoint's random streams back once the replay is over."""

    def __init__(self, inner, replay: int, state: dict[str, Any]):
        self.inner, self.replay, self.state, self.calls = inner, replay, state, 0

    def __iter__(self):
        return self

    def __next__(self):
        if self.calls == self.replay:
            rngstate.restore(self.state)
        self.calls += 1
        return next(self.inner)

    def __getattr__(self, name: str):
        return getattr(self.inner, name)


def register() -> None:
    from mmengine.fileio.backends import LocalBackend, register_backend
    from mmengine.hooks import Hook
    from mmengine.registry import HOOKS

    if "ExactResumeHook" in HOOKS.module_dict:
        return

    class AtomicLocalBackend(LocalBackend):
        def put(self, obj: bytes, filepath) -> None:
            from harness import atomic

            Path(filepath).parent.mkdir(parents=True, exist_ok=True)
            atomic.write_bytes(filepath, obj)

    register_backend(BACKEND, AtomicLocalBackend)

    @HOOKS.register_module()
    class ExactResumeHook(Hook):
        """Adds the random streams to each checkpoint and restores them on resume. Also drops the logged-scalar
        history: under torch.save's pickle protocol 2 it needs ``builtins.getattr``, which would make any
        checkpoint able to run code if allow-listed; resuming only loses the log's smoothing window."""

        priority = "LOWEST"

        def __init__(self, resuming: bool = False):
            self.resuming = resuming

        def before_save_checkpoint(self, runner, checkpoint: dict) -> None:
            if "message_hub" in checkpoint:
                checkpoint["message_hub"]["log_scalars"] = {}
            checkpoint["harness_rng"] = rngstate.capture()

        def after_load_checkpoint(self, runner, checkpoint: dict) -> None:
            if not self.resuming:  # a load_from/init checkpoint: weights only
                return
            state = checkpoint.get("harness_rng")
            if state is None:
                raise HarnessError(f"{runner.work_dir}: its checkpoint carries no random-stream state (written by "
                                   "an older harness), so resuming would not reproduce an uninterrupted run; "
                                   "delete the folder to train afresh")
            loop = runner.train_loop
            loop.dataloader_iterator = _RestoreAfterReplay(loop.dataloader_iterator, int(checkpoint["meta"]["iter"]),
                                                           state)
