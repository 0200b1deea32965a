"""Where datasets live: the one owner of the data-root rules (and default split) every command follows.

* a data root is one dataset's folder (``images/`` + ``masks/``): ``--data_root``, else
  ``$POLYPSEG_DATA_ROOT``, else ``data/kvasir-seg``;
* the data dir holds several datasets side by side (multi-source training, the benchmark):
  ``--data_dir``, else ``$POLYPSEG_DATA_DIR``, else the folder holding ``$POLYPSEG_DATA_ROOT``,
  else ``data``.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_ROOT_ENV = "POLYPSEG_DATA_ROOT"
DATA_DIR_ENV = "POLYPSEG_DATA_DIR"
DEFAULT_DATA_ROOT = "data/kvasir-seg"
DEFAULT_SPLIT = "data/splits/kvasir_pranet_900_100.csv"
"""The one default split of every command: the polyp papers' Kvasir-SEG 900/100 (the recipe's)."""


def resolve_data_root(data_root: str | Path | None) -> Path:
    """Explicit value, else ``$POLYPSEG_DATA_ROOT``, else ``data/kvasir-seg``."""
    return Path(data_root or os.environ.get(DATA_ROOT_ENV) or DEFAULT_DATA_ROOT)


def resolve_data_dir(data_dir: str | Path | None) -> Path:
    """Explicit value, else ``$POLYPSEG_DATA_DIR``, else the folder holding
    ``$POLYPSEG_DATA_ROOT`` (Kvasir-SEG beside the other datasets), else ``data``."""
    if data_dir or os.environ.get(DATA_DIR_ENV):
        return Path(data_dir or os.environ[DATA_DIR_ENV])
    kvasir = os.environ.get(DATA_ROOT_ENV)
    return Path(kvasir).parent if kvasir else Path("data")
