"""Stable content hashes and deterministic seeds (DomainBed style: a seed is a hash of its arguments)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any


def canonical_json(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def stable_hash(obj: Any, length: int = 16) -> str:
    """Hash of a JSON-able object that does not depend on dict order, process or platform."""
    return hashlib.blake2b(canonical_json(obj).encode(), digest_size=16).hexdigest()[:length]


def seed_from(*parts: Any) -> int:
    """A 63-bit seed derived only from the given parts (never from global RNG state)."""
    digest = hashlib.blake2b(canonical_json(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def file_digest(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
