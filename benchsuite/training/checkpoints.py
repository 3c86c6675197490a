"""The dense-phase cache: prefix checkpoints shared by runs that differ only after the prefix.

IMP, BIMP and imp-retrain train the same dense prefix for every target and variant
(``Plan.cache_epoch``/``Plan.cache_key``); the first run of a prefix saves the loop's state at
its end, later runs load it and continue with the same numbers bit for bit (docs/protocol.md,
Equal budget).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import torch

# what an entry holds; an entry without all of them is foreign or truncated
CACHE_FIELDS = {
    "model",
    "optimizer",
    "method",
    "order",
    "augment",
    "method_rng",
    "images",
    "curves",
    "train_loss",
    "train_flops",
}


def prefix_key(prefix: dict[str, Any]) -> str:
    """The entry's name: a hash of everything the prefix's numbers depend on."""
    blob = json.dumps(prefix, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:24]


class Checkpoints:
    """The cache under ``root`` (None: nothing cached); keeps a warning for the run's tags."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.warning: str | None = None

    def path(self, key: str) -> Path | None:
        return None if self.root is None else self.root / f"{key}.pt"

    def load(self, key: str) -> dict[str, Any] | None:
        """The entry, or None where there is none or it does not load (a truncated or foreign
        file): then it is removed with a warning, and the run rebuilds it."""
        path = self.path(key)
        if path is None or not path.exists():
            return None
        try:
            payload = torch.load(path, map_location="cpu", weights_only=False)
            if not isinstance(payload, dict) or not CACHE_FIELDS <= payload.keys():
                raise ValueError("entries are missing")
        except Exception as exc:  # noqa: BLE001 - any unreadable entry is rebuilt, never used
            self.warning = f"cached dense checkpoint {path} is corrupt ({exc}); rebuilt"
            warnings.warn(self.warning, RuntimeWarning, stacklevel=2)
            path.unlink(missing_ok=True)
            return None
        return payload

    def save(self, key: str, payload: dict[str, Any]) -> None:
        path = self.path(key)
        if path is None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        os.close(fd)
        torch.save(payload, tmp)
        os.replace(tmp, path)  # atomic: concurrent writers of the same prefix are harmless
