"""``harness plugins new KIND NAME --out DIR``: a pip-installable plugin package that works out of the box.

The package is rendered from ``harness/templates/common`` plus ``harness/templates/<kind>``: files ending
in ``.tmpl`` have ``{{placeholder}}`` values filled in, and the ``PACKAGE`` folder takes the module name.
Starting from code that installs, registers and passes its own tests means a plugin author edits a
working plugin instead of debugging packaging.
"""
from __future__ import annotations

import re
from pathlib import Path

from harness.errors import HarnessError
from harness.registry import KINDS

TEMPLATES = Path(__file__).resolve().parent / "templates"
NAME_RE = re.compile(r"[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*")
KIND_TEXT = {
    "adapter": ("adapters", "size, dtype and channels kept"),
    "degradation": ("degradations", "size and dtype kept, deterministic given the rng, worse with severity"),
    "segmenter": ("segmenters", "train leaves a model, predict writes COCO results the harness evaluates"),
}


def names(kind: str, name: str) -> dict[str, str]:
    """Every name the templates use, derived from the plugin name (``gamma-fix`` -> ``harness-gamma-fix``,
    module ``harness_gamma_fix``, entry point ``gamma_fix``, class ``GammaFixAdapter``)."""
    if kind not in KINDS:
        raise HarnessError(f"plugins new: unknown kind '{kind}' (known: {', '.join(KINDS)})")
    if not NAME_RE.fullmatch(name) or len(name) > 40:
        raise HarnessError(f"plugins new: bad plugin name '{name}': use lower-case letters and digits, words "
                           f"joined by '-' or '_', starting with a letter, at most 40 characters (e.g. gamma-fix)")
    if re.match(r"harness[-_]", name):
        raise HarnessError(f"plugins new: give the plugin name without the 'harness-' prefix "
                           f"(the package is named harness-NAME): '{name[8:]}'")
    words = re.split(r"[-_]", name)
    config_key, contract = KIND_TEXT[kind]
    return {
        "name": name, "kind": kind, "dist": "harness-" + "-".join(words), "module": "harness_" + "_".join(words),
        "entry": "_".join(words), "cls": "".join(w.capitalize() for w in words) + kind.capitalize(),
        "hook": KINDS[kind][0], "config_key": config_key, "contract": contract,
    }


def render(text: str, values: dict[str, str]) -> str:
    def value(match: re.Match) -> str:
        if match.group(1) not in values:
            raise HarnessError(f"template placeholder '{{{{{match.group(1)}}}}}' has no value")
        return values[match.group(1)]

    return re.sub(r"\{\{(\w+)\}\}", value, text)


def new_plugin(kind: str, name: str, out: str | Path) -> Path:
    """Write the package for plugin ``name`` of ``kind`` into ``out`` (absent or empty); returns ``out``."""
    values = names(kind, name)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise HarnessError(f"{out}: already exists and is not an empty folder; choose a new --out")
    files: dict[Path, str] = {}
    for folder in (TEMPLATES / "common", TEMPLATES / kind):
        for src in sorted(p for p in folder.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            rel = Path(*(values["module"] if part == "PACKAGE" else part for part in src.relative_to(folder).parts))
            text = src.read_text()
            if rel.suffix == ".tmpl":
                rel, text = rel.with_suffix(""), render(text, values)
            files[rel] = text
    for rel, text in files.items():
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text(text)
    return out
