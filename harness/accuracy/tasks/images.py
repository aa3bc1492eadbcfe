"""scikit-learn's bundled 8x8 digits (1797 images, real data, no download) as patch sequences."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import Tensor

SIDE = 8  # the images are 8x8, pixel values 0..16
NAMES = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")


@functools.cache
def _load() -> tuple[Tensor, Tensor]:
    from sklearn.datasets import load_digits  # here: only the image tasks pay for sklearn's import

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32) / 16.0  # (N, 8, 8) in [0, 1]
    return images, torch.tensor(data.target, dtype=torch.long)  # (N,)


def patchify(images: Tensor, patch: int) -> Tensor:
    """(N, 8, 8) -> (N, m, patch*patch), m = (8/patch)^2 patches in row-major order, as in ViT."""
    if patch <= 0 or SIDE % patch:
        raise ValueError(f"patch={patch} must divide the image side {SIDE}: one of [1, 2, 4, 8]")
    n, k = images.shape[0], SIDE // patch
    grid = images.reshape(n, k, patch, k, patch).permute(0, 1, 3, 2, 4)  # (N, k, k, patch, patch)
    return grid.reshape(n, k * k, patch * patch)  # (N, m, patch*patch)


def split(seed: int, test_frac: float = 0.2) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """(train images, labels), (test images, labels): a held-out split shuffled by `seed`."""
    images, labels = _load()
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    n_test = round(test_frac * len(labels))
    test, train = order[:n_test], order[n_test:]
    return (images[train], labels[train]), (images[test], labels[test])


def sample(
    train: tuple[Tensor, Tensor], size: int, gen: torch.Generator, shift: int
) -> tuple[Tensor, Tensor]:
    """A training batch: `size` images drawn with replacement, each moved by up to `shift`
    pixels along each axis (zero fill), the classic augmentation for digit images."""
    images, labels = train
    idx = torch.randint(0, len(labels), (size,), generator=gen)  # (b,)
    return translate(images[idx], shift, gen), labels[idx]


def translate(images: Tensor, shift: int, gen: torch.Generator) -> Tensor:
    """(b, 8, 8) -> (b, 8, 8), each image moved by a random (dy, dx) in [-shift, shift]^2."""
    if shift == 0:
        return images
    b = images.shape[0]
    padded = F.pad(images, (shift, shift, shift, shift))  # (b, 8 + 2s, 8 + 2s)
    dy, dx = torch.randint(-shift, shift + 1, (2, b, 1), generator=gen)  # (b, 1) each
    rows = torch.arange(SIDE) + shift - dy  # (b, 8): output row r reads padded row r + s - dy
    cols = torch.arange(SIDE) + shift - dx  # (b, 8)
    return padded[torch.arange(b)[:, None, None], rows[:, :, None], cols[:, None, :]]
