"""THE loader of checkpoint files a user passes: tensors and plain containers only, never code.

``torch.load(weights_only=False)`` runs whatever a pickle says; a checkpoint downloaded from
somewhere would run its payload inside ``tune-threshold`` or ``ensemble``. Every polypseg command
reads checkpoints through :func:`load_checkpoint` (Lightning's own loads are weights-only too).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable, or holds more than weights and settings."""


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint at ``path`` as a dict, loaded weights-only on the CPU.

    Args:
        path: a ``.ckpt`` written by ``polypseg fit``, ``tune-threshold`` or ``ensemble``.

    Raises:
        CheckpointError: no such file, not a checkpoint, or it holds objects that only
            unpickling with code execution could build (refused, nothing is run).

    Example:
        >>> ckpt = load_checkpoint("models/polypseg.ckpt")  # doctest: +SKIP
        >>> ckpt["hyper_parameters"]["image_size"]  # doctest: +SKIP
        256
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused: it holds objects beyond tensors and plain settings, which loading "
            f"would have to execute ({str(exc).splitlines()[0][:160]}); use a checkpoint written "
            "by polypseg/Lightning from a source you trust"
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise CheckpointError(f"{path}: not a Lightning checkpoint (no state_dict)")
    return checkpoint
