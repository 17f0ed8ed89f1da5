"""scikit-learn's bundled handwritten digits (1,797 images of 8x8 pixels)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

__all__ = ["Dataset", "load_digits_split"]


@dataclass(frozen=True)
class Dataset:
    """A classification data set split into train and test tensors.

    Inputs are float32 of shape (N, features), standardised with the training
    split's per-feature mean and std; targets are int64 class indices.
    """

    name: str
    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    n_classes: int

    @property
    def n_features(self) -> int:
        return int(self.x_train.shape[1])


def load_digits_split(test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """The digits, split stratified by class with a fixed seed.

    Args:
        test_fraction: share of the 1,797 images held out for testing.
        seed: seed of the split; the same seed gives the same split.
    """
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    bunch = load_digits()
    x = bunch.data.astype(np.float32)
    y = bunch.target.astype(np.int64)
    # the stratified split needs one image per class on each side
    n, k = len(y), len(np.unique(y))
    n_test = math.ceil(test_fraction * n)
    if min(n_test, n - n_test) < k:
        raise ValueError(
            f"test_fraction = {test_fraction!r} leaves {n - n_test} training and "
            f"{n_test} test images of {n}; a stratified split needs at least {k} "
            f"(one per class) on each side: use a value in "
            f"[{k / n:.4f}, {1 - k / n:.4f}]"
        )
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, stratify=y, random_state=seed
    )
    mu = x_tr.mean(axis=0)
    sd = x_tr.std(axis=0)
    sd[sd == 0] = 1.0  # constant border pixels
    return Dataset(
        name="digits",
        x_train=torch.from_numpy((x_tr - mu) / sd),
        y_train=torch.from_numpy(y_tr),
        x_test=torch.from_numpy((x_te - mu) / sd),
        y_test=torch.from_numpy(y_te),
        n_classes=10,
    )
