"""Where a result came from: the code's git commit and a digest of the config that made it.

Recorded in ONNX metadata, test reports and MLflow tags, so a number can be traced to its code.
"""

from __future__ import annotations

import hashlib
import json
import subprocess

import polypseg


def git_sha() -> str:
    """The checked-out commit, or ``"unknown"`` outside a git checkout (an installed wheel)."""
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def config_digest(config: dict | str | None) -> str | None:
    """16 hex digits of SHA-256 over the config (dicts in sorted-key JSON); ``None`` stays ``None``."""
    if config is None:
        return None
    text = config if isinstance(config, str) else json.dumps(config, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def provenance(config: dict | str | None = None) -> dict:
    """Version, commit and config digest, as one dict for metadata and reports."""
    return {
        "polypseg_version": polypseg.__version__,
        "git_sha": git_sha(),
        "config_digest": config_digest(config),
    }
