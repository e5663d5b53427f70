"""Everything the harness writes gets the modes the umask asks for (0644 / 0755 by default), not mkstemp's 0600,
so a stage cache or dataset shared by a team, or written by Ray workers as another user, can be read."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from conftest import matrix_config, write_config
from harness import atomic, config, matrix
from harness.cache import Store
from harness.data.coco import write_json_atomic
from harness.data.synthetic import generate_synthetic


@pytest.fixture(params=[(0o022, 0o644, 0o755), (0o027, 0o640, 0o750)], ids=["umask022", "umask027"])
def modes(request):
    """(file mode, folder mode) expected under the umask set for the test; the old umask comes back after."""
    umask, file_mode, dir_mode = request.param
    old = os.umask(umask)
    try:
        yield file_mode, dir_mode
    finally:
        os.umask(old)


def wrong_modes(root: Path, modes: tuple[int, int], include_root: bool = True) -> tuple[list[str], int]:
    """Entries under ``root`` whose mode is not the expected one, and how many files were looked at."""
    file_mode, dir_mode = modes
    wrong, files = [], 0
    for path in [root, *root.rglob("*")] if include_root else root.rglob("*"):
        if path.is_symlink():
            continue
        got = stat.S_IMODE(path.lstat().st_mode)
        want = dir_mode if path.is_dir() else file_mode
        files += not path.is_dir()
        if got != want:
            wrong.append(f"{path.relative_to(root)}: {oct(got)}, expected {oct(want)}")
    return wrong, files


def test_prepared_dataset(tmp_path, modes):
    out = tmp_path / "data"
    generate_synthetic(out, n_train=2, n_val=1, n_test=1, size=32, seed=0, progress=False)
    wrong, files = wrong_modes(out, modes)
    assert not wrong and files == 4 + 4  # 4 JSON files, 4 images


def test_stages_and_run_folder_of_a_matrix(registry, dataset, tmp_path, modes):
    from harness.leaderboard import tables

    cfg = config.load(write_config(tmp_path / "matrix.yaml", matrix_config(dataset)))
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    summary = matrix.run(cfg, registry, out=run_dir, store=Store(cache), progress=False)
    assert summary["cells"]["failed"] == 0
    tables.write(run_dir, tmp_path / "board" / "leaderboard.md")
    for root in (cache, run_dir, tmp_path / "board"):
        wrong, files = wrong_modes(root, modes)
        assert not wrong and files > 0, root
    assert len(list(cache.glob("*/*/stage.json"))) >= 5


def test_checkpoint_and_json(tmp_path, modes):
    import torch

    from harness import checkpoints

    checkpoints.save({"w": torch.zeros(3)}, tmp_path / "ckpt" / "model.pth")
    checkpoints.save({"w": torch.ones(3)}, tmp_path / "ckpt" / "model.pth")  # replacing keeps the mode
    write_json_atomic(tmp_path / "json" / "x.json", {"a": 1})
    for root in (tmp_path / "ckpt", tmp_path / "json"):
        wrong, files = wrong_modes(root, modes)
        assert not wrong and files == 1, root
    assert torch.equal(checkpoints.load(tmp_path / "ckpt" / "model.pth")["w"], torch.ones(3))


def test_temporary_names_are_fresh_and_follow_the_umask(tmp_path, modes):
    fd, name = atomic.mkstemp(tmp_path, suffix=".bin")
    os.close(fd)
    folder = atomic.mkdtemp(tmp_path)
    assert Path(name).parent == tmp_path and name.endswith(".bin") and Path(folder).name.startswith(".tmp-")
    assert stat.S_IMODE(os.stat(name).st_mode) == modes[0] and stat.S_IMODE(os.stat(folder).st_mode) == modes[1]
    names = set()
    for _ in range(50):
        fd, name = atomic.mkstemp(tmp_path)
        os.close(fd)
        names.add(name)
    assert len(names) == 50
