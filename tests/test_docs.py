"""The documentation runs: every code block in docs/*.md is executed, and the reference pages cover every
plugin hook and every matrix key.

Conventions for code in the docs (what a docs author needs to know):

- Each page runs in its own empty temporary folder. Its blocks run there **in page order** and share state
  like one terminal session: files, the current directory and exported variables carry over from one block
  to the next (each block runs in bash, which saves ``export -p`` and ``pwd`` when it ends). Asking pytest for
  one block (``-k 'leaderboard.md:40'``) first runs the page's earlier blocks.
- ```` ```bash ```` blocks run with ``bash -e`` and must exit 0.
- ```` ```console ```` blocks: a line starting with ``$ `` is a command (a trailing ``\\`` continues it); the
  lines after it, up to the next command, are its expected output. Each expected line must occur, in order,
  in what the command printed (stdout and stderr), comparing runs of whitespace as one space, with ``...``
  matching anything. A command must exit 0 unless its expected output has a ``harness: error:`` line, in
  which case it must fail.
- ```` ```python ```` blocks run as ``python -`` (so the page folder is importable) with the same environment;
  ``assert`` in them is part of the test.
- ``<!-- file: NAME -->`` on the line before a block (of any language) writes the block to ``NAME`` instead
  of running it: plugin modules and matrix configs that later blocks use.
- ``<!-- not run: reason -->`` on the line before a block skips it. Use it only for long trainings, real
  datasets and commands that would change the environment (``pip install``), and say why.
- Blocks in other languages (yaml, toml, markdown, text) are shown, not run.
- The environment: ``.venv/bin`` first in ``PATH`` (the repo's ``harness``), the repo on ``PYTHONPATH`` (so
  ``tests.fake_plugins`` imports), ``HARNESS_CACHE`` inside the page folder, no other ``HARNESS_*``
  variable set. Every block must finish in seconds: tiny synthetic data (``harness data generate synthetic
  --n-train 8 --n-val 2 --n-test 4 --size 64``), the ``threshold`` segmenter of ``tests.fake_plugins``, or a
  plugin module written by the page itself.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))
RUN = ("bash", "console", "python")
TIMEOUT = 60
MARK = re.compile(r"<!--\s*(not run|file)\s*:\s*(.*?)\s*-->")
FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)[^\n]*$")


class BlockFailed(Exception):
    """A block (or one console command) did not do what the page says."""


@dataclass
class Block:
    page: str
    line: int  # 1-based line of the opening fence
    lang: str
    code: str
    skip: str | None = None  # why it is not run
    file: str | None = None  # write the code here instead of running it

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def blocks(path: Path) -> list[Block]:
    """Fenced code blocks of a markdown page, with the marker comment on the line before each."""
    lines = path.read_text(encoding="utf-8").splitlines()
    out: list[Block] = []
    i = 0
    while i < len(lines):
        opening = FENCE.match(lines[i])
        if not opening:
            i += 1
            continue
        indent, fence, lang = opening.groups()
        end = i + 1
        while end < len(lines) and not lines[end].strip().startswith(fence):
            end += 1
        code = "\n".join(line[len(indent):] if line.startswith(indent) else line for line in lines[i + 1:end])
        prev = lines[i - 1].strip() if i else ""
        mark = MARK.fullmatch(prev)
        block = Block(path.name, i + 1, lang.lower(), code + "\n")
        if mark and mark.group(1) == "not run":
            block.skip = mark.group(2)
            assert block.skip, f"{block.id}: say why a block is not run"
        elif mark:
            block.file = mark.group(2)
        out.append(block)
        i = end + 1
    return out


def runnable(block: Block) -> bool:
    return block.file is not None or block.lang in RUN


ALL = [b for page in PAGES for b in blocks(page) if runnable(b)]


# -- running a page's blocks as one session -------------------------------------------------------
@dataclass
class Session:
    folder: Path
    done: int = 0  # blocks of the page run so far (in order)
    failed: str | None = None
    env: dict[str, str] = field(default_factory=dict)

    @property
    def state(self) -> Path:
        return self.folder.parent / f"{self.folder.name}.state"

    def shell(self, script: str, errexit: bool = True, timeout: int = TIMEOUT) -> subprocess.CompletedProcess:
        """Run ``script`` in bash with the variables and directory the previous one left (``errexit``: as
        ``bash -e``; a console command line runs as typed, its status is that of its last command)."""
        self.state.mkdir(exist_ok=True)
        env_file, cwd_file = self.state / "env.sh", self.state / "cwd"
        if not cwd_file.exists():
            cwd_file.write_text(str(self.folder))
        wrapper = (f"[ -f '{env_file}' ] && source '{env_file}'\n"
                   f"cd \"$(cat '{cwd_file}')\"\n"
                   f"trap 'rc=$?; export -p | grep -v \"^declare -[a-zA-Z]*r\" > \"{env_file}\"; "
                   f"pwd > \"{cwd_file}\"; exit $rc' EXIT\n"
                   + ("set -e\n" if errexit else "") + script)
        return subprocess.run(["bash", "-c", wrapper], env=self.env, cwd=self.folder, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, timeout=timeout)

    def run(self, block: Block) -> None:
        if block.file:
            target = Path(self.shell("pwd").stdout.strip()) / block.file
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(block.code)
        elif block.lang == "python":
            script = self.state / "block.py"
            script.parent.mkdir(exist_ok=True)
            script.write_text(block.code)
            check(block, self.shell(f"python - < '{script}'"))
        elif block.lang == "bash":
            check(block, self.shell(block.code))
        elif block.lang == "console":
            for line, command, expected in console_commands(block):
                proc = self.shell(command, errexit=False)
                wants_error = any(e.startswith("harness: error:") for e in expected)
                where = f"{block.page}:{line}: `{command}`"
                if wants_error and proc.returncode == 0:
                    raise BlockFailed(f"{where} should fail; it printed:\n{proc.stdout}")
                if not wants_error and proc.returncode != 0:
                    raise BlockFailed(f"{where} exited {proc.returncode}:\n{proc.stdout}")
                match_output(where, expected, proc.stdout)


def base_env(folder: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("HARNESS_")}
    env["PATH"] = os.pathsep.join([str(ROOT / ".venv" / "bin"), str(Path(sys.executable).parent), env["PATH"]])
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    env["HARNESS_CACHE"] = str(folder / ".cache" / "stages")
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONDONTWRITEBYTECODE="1")
    return env


def check(block: Block, proc: subprocess.CompletedProcess) -> None:
    if proc.returncode != 0:
        raise BlockFailed(f"{block.id} ({block.lang}) exited {proc.returncode}:\n{proc.stdout}")


def console_commands(block: Block) -> list[tuple[int, str, list[str]]]:
    """(line, command, expected output lines) of a console block."""
    out: list[tuple[int, str, list[str]]] = []
    lines = block.code.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].startswith("$ "):
            if lines[i].strip():
                raise BlockFailed(f"{block.page}:{block.line + 1 + i}: output before any `$ ` command")
            i += 1
            continue
        start, parts = i, [lines[i][2:]]
        while parts[-1].endswith("\\") and i + 1 < len(lines):
            i += 1
            parts.append(lines[i])
        i += 1
        expected = []
        while i < len(lines) and not lines[i].startswith("$ "):
            if lines[i].strip():
                expected.append(lines[i])
            i += 1
        out.append((block.line + 1 + start, "\n".join(parts), expected))
    return out


def _squash(text: str) -> str:
    return " ".join(text.split())


def match_output(where: str, expected: list[str], actual: str) -> None:
    """Each expected line occurs in a later actual line than the previous one (``...`` = anything)."""
    got = [_squash(line) for line in actual.splitlines()]
    pos = 0
    for want in expected:
        pattern = re.compile(".*".join(re.escape(part) for part in _squash(want).split("...")))
        hit = next((j for j in range(pos, len(got)) if pattern.search(got[j])), None)
        if hit is None:
            raise BlockFailed(f"{where}: expected output line not found (in order):\n  {want}\ngot:\n{actual}")
        pos = hit + 1


@pytest.fixture(scope="module")
def sessions(tmp_path_factory):
    made: dict[str, Session] = {}

    def get(page: str) -> Session:
        if page not in made:
            folder = tmp_path_factory.mktemp(Path(page).stem)
            made[page] = Session(folder, env=base_env(folder))
        return made[page]

    return get


@pytest.mark.parametrize("block", ALL, ids=[b.id for b in ALL])
def test_doc_block(block: Block, sessions):
    if block.skip:
        pytest.skip(f"not run: {block.skip}")
    session = sessions(block.page)
    page = [b for b in ALL if b.page == block.page]
    index = page.index(block)
    for earlier in page[session.done:index]:  # blocks deselected on the command line still set up state
        if session.failed:
            break
        if not earlier.skip:
            try:
                session.run(earlier)
            except (AssertionError, subprocess.TimeoutExpired):
                session.failed = earlier.id
        session.done += 1
    if session.failed:
        pytest.skip(f"an earlier block of the page failed: {session.failed}")
    session.done = index + 1
    try:
        session.run(block)
        return
    except BlockFailed as exc:
        message = str(exc)
    except subprocess.TimeoutExpired:
        message = f"{block.id}: took over {TIMEOUT} s; blocks must finish in seconds"
    session.failed = block.id
    pytest.fail(message, pytrace=False)


def test_docs_have_runnable_blocks():
    assert {p.name for p in PAGES} >= {"writing-an-adapter.md", "running-the-matrix.md", "configuration.md",
                                       "leaderboard.md"}
    for page in PAGES:
        if page.name != "README.md":
            assert any(b.page == page.name and not b.skip for b in ALL), f"{page.name}: no block is run"


# -- coverage of the reference ---------------------------------------------------------------------
def test_every_hook_is_documented():
    from harness import hookspecs

    hooks = [name for name in vars(hookspecs) if name.startswith("harness_")]
    assert hooks
    adapter_page = (DOCS / "writing-an-adapter.md").read_text(encoding="utf-8")
    assert "harness_register_adapters" in adapter_page
    text = "\n".join(p.read_text(encoding="utf-8") for p in PAGES)
    missing = [h for h in hooks if h not in text]
    assert not missing, f"hooks not mentioned in docs/*.md: {missing}"


def _sections(text: str) -> dict[str, str]:
    """``### `key` `` heading -> the text up to the next heading of that level or above."""
    out: dict[str, str] = {}
    parts = re.split(r"^(#{1,3}) (.*)$", text, flags=re.M)
    for i in range(1, len(parts) - 2, 3):
        key = re.fullmatch(r"`([\w]+)`.*", parts[i + 1].strip())
        if key and len(parts[i]) == 3:
            out[key.group(1)] = parts[i + 2]
    return out


def _default_text(default) -> str:
    import yaml

    if default is None:
        return "`null`"
    return "`" + yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip() + "`"


def test_every_config_key_is_documented_with_its_default():
    from harness.config import ENTRY_KEYS, KEYS, OPTIONAL

    text = (DOCS / "configuration.md").read_text(encoding="utf-8")
    sections = _sections(text)
    assert "\n## Top-level keys\n" in text, "configuration.md: no '## Top-level keys' section"
    table = text.split("\n## Top-level keys\n", 1)[1].split("\n### ", 1)[0]
    rows = {m.group(1): [c.strip() for c in m.group(2).split("|")]
            for m in re.finditer(r"^\| `(\w+)` \|(.*)\|\s*$", table, flags=re.M)}
    for key, (default, _) in KEYS.items():
        assert key in sections, f"configuration.md: no '### `{key}`' section"
        assert key in rows, f"configuration.md: no '| `{key}` |' row in the key table"
        required = default is None and key not in OPTIONAL
        shown = rows[key][1]
        assert shown == ("required" if required else _default_text(default)), \
            f"configuration.md: default of `{key}` shown as {shown!r}, harness.config.KEYS says {default!r}"
    for list_key, entry_keys in ENTRY_KEYS.items():
        section = sections[list_key]
        for entry_key in entry_keys:
            assert re.search(rf"^\| `{entry_key}` \|", section, flags=re.M), \
                f"configuration.md: `{list_key}` section has no '| `{entry_key}` |' row"


def test_leaderboard_excerpts_are_verbatim():
    """The excerpts that docs/leaderboard.md explains are what the renderer really writes."""
    rendered = (ROOT / "tests" / "fixtures" / "run_small.expected.md").read_text(encoding="utf-8")
    excerpts = [b for b in blocks(DOCS / "leaderboard.md") if b.lang == "markdown"]
    assert excerpts
    for excerpt in excerpts:
        assert excerpt.code in rendered, f"{excerpt.id}: not found verbatim in run_small.expected.md"
