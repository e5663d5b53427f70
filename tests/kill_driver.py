"""Runs one training in a fresh process and, if asked, SIGKILLs it at a chosen point, as a power cut or an OOM
killer would: at the start of an iteration, or halfway through writing a checkpoint (the temporary file is cut
to half its size and the process dies before the rename). tests/test_resume.py resumes what it leaves.

    python tests/kill_driver.py SPEC.json      (start it in a new session: a kill takes its process group)

SPEC: {"trainer": mmdet|tv|cyclegan|dncnn, "out": DIR, "data": DIR (segmenters) or "source"/"target": [paths]
(adapters), "params": {...}, "init": CHECKPOINT (segmenters, optional), "kill_at_iter": N, "kill_in_save": N (the N-th checkpoint write)}. After a run that
ends normally, the trainer's final state (every model and optimiser tensor) is in OUT/final_state.pt.
"""
from __future__ import annotations

import json
import os
import re
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHECKPOINT = re.compile(r"(iter_\d+\.pth|last\.pth|checkpoint\.pt)")


def die() -> None:
    """SIGKILL the whole process group (the driver runs in a session of its own): data-loader workers whose
    parent is SIGKILLed alone can hang on forever holding its output pipes."""
    sys.stdout.flush()
    os.killpg(os.getpgid(0), signal.SIGKILL)


def kill_in_save(n: int) -> None:
    real, writes = os.replace, [0]

    def replace(src, dst, *args, **kwargs):
        if CHECKPOINT.fullmatch(Path(dst).name):
            writes[0] += 1
            if writes[0] == n:
                os.truncate(src, os.path.getsize(src) // 2)
                die()
        return real(src, dst, *args, **kwargs)

    os.replace = replace


def kill_at_iter(trainer: str, n: int) -> None:
    """Die when iteration ``n`` (0-based) is about to run, wherever each trainer starts one."""
    if trainer == "mmdet":
        from mmengine.runner import IterBasedTrainLoop

        real = IterBasedTrainLoop.run_iter

        def run_iter(self, data_batch):
            if self._iter == n:
                die()
            return real(self, data_batch)

        IterBasedTrainLoop.run_iter = run_iter
    elif trainer == "tv":
        from plugins.segmenters.tv_mask_rcnn import TrainSet

        real_batch = TrainSet.batch

        def batch(self, it, size, device):
            if it == n:
                die()
            return real_batch(self, it, size, device)

        TrainSet.batch = batch
    else:
        from plugins.adapters.training import FitLoop

        real_run = FitLoop.run

        def run(self, progress, desc):
            step = self.step

            def dying_step():
                if self.iteration == n:
                    die()
                return step()

            self.step = dying_step
            return real_run(self, progress, desc)

        FitLoop.run = run


def keep_final_state(trainer: str, out: Path) -> None:
    """Save every model and optimiser tensor at the end of an adapter fit (its checkpoint is deleted then)."""
    if trainer not in ("cyclegan", "dncnn"):
        return
    import torch

    from plugins.adapters.training import FitLoop

    real_run = FitLoop.run

    def run(self, progress, desc):
        last = real_run(self, progress, desc)
        torch.save(self.model_state(), out / "final_state.pt")
        return last

    FitLoop.run = run


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    trainer, out, params = spec["trainer"], Path(spec["out"]), spec.get("params", {})
    out.mkdir(parents=True, exist_ok=True)
    if spec.get("kill_in_save"):
        kill_in_save(int(spec["kill_in_save"]))
    if spec.get("kill_at_iter") is not None:
        kill_at_iter(trainer, int(spec["kill_at_iter"]))
    keep_final_state(trainer, out)
    if trainer == "mmdet":
        from plugins.segmenters.mmdet_mask_rcnn import MMDetMaskRCNN

        MMDetMaskRCNN(**params).train(Path(spec["data"]), out, "tiny", seed=0, init=spec.get("init"))
    elif trainer == "tv":
        from plugins.segmenters.tv_mask_rcnn import TVMaskRCNN

        TVMaskRCNN(**params).train(Path(spec["data"]), out, "tiny", seed=0, init=spec.get("init"))
    elif trainer == "cyclegan":
        from plugins.adapters.cyclegan import CycleGAN

        CycleGAN(**params).fit(spec["source"], spec["target"], out, seed=0, progress=False)
    elif trainer == "dncnn":
        from plugins.adapters.dncnn import DnCNN

        DnCNN(**params).fit(spec["source"], spec["target"], out, seed=0, progress=False)
    else:
        raise SystemExit(f"unknown trainer {trainer!r}")


if __name__ == "__main__":
    main()
