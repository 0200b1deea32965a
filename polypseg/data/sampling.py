"""Training order and augmentation seeds that depend on (seed, epoch) only.

albumentations 2.x ignores the global seed, and a DataLoader's shuffle draws from the global RNG,
whose state a resumed run does not have. :class:`SeededShuffle` yields ``(index, sample_seed)``
pairs from the run's seed and the epoch Lightning sets, and the dataset seeds its augmentation
with ``sample_seed``: the same seed gives the same batches, with any number of workers, and a run
resumed at an epoch boundary continues exactly as the uninterrupted one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import Sampler


class SeededShuffle(Sampler[tuple[int, int]]):
    """A random permutation per epoch, each index paired with its augmentation seed.

    Args:
        size: number of samples.
        seed: the run's seed (``seed_everything``).
        weights: per-sample draw weights: an epoch is then ``size`` draws with replacement
            (per-source sampling shares); ``None`` = each sample once.

    Example:
        >>> sampler = SeededShuffle(4, seed=0)
        >>> sampler.set_epoch(1)
        >>> sorted(i for i, _ in sampler)
        [0, 1, 2, 3]
    """

    def __init__(self, size: int, seed: int, weights: Sequence[float] | None = None):
        self.size, self.seed, self.epoch = size, int(seed) % 2**32, 0  # torch takes < 2**63
        self.weights = None if weights is None else torch.as_tensor(weights, dtype=torch.double)

    def set_epoch(self, epoch: int) -> None:
        """Called by Lightning at the start of every training epoch."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.size

    def __iter__(self) -> Iterator[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        if self.weights is None:
            order = torch.randperm(self.size, generator=generator).tolist()
        else:
            order = torch.multinomial(self.weights, self.size, True, generator=generator).tolist()
        seeds = np.random.SeedSequence([self.seed, self.epoch]).generate_state(self.size)
        return iter(zip(order, (int(s) for s in seeds), strict=True))


def step_choice(options: int, seed: int, step: int) -> int:
    """Index of one of ``options`` for training step ``step``, reproducible across resumes."""
    return int(np.random.default_rng([int(seed), int(step)]).integers(options))
