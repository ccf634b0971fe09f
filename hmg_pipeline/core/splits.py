"""Splits of the labelled edges into train / validation / test, stratified by class.

Two schemes (``TrainConfig.split``): ``repeated``, the paper's protocol, draws ``folds``
independent 80:10:10 splits (seeds seed, seed + 1, ...; their test sets overlap, so this is
not k-fold); ``kfold`` is stratified k-fold (disjoint test sets covering every edge, validation
= the next fold, training = the rest). How held-out edges take part in message passing is
``TrainConfig.message_passing``, not the split's business.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Scheme = Literal["repeated", "kfold"]


@dataclass(frozen=True)
class Split:
    fold: int
    seed: int
    train: np.ndarray
    val: np.ndarray
    test: np.ndarray


def stratified_split(
    labels: np.ndarray, seed: int, fold: int = 0, fractions: tuple[float, float] = (0.8, 0.1)
) -> Split:
    """Per class: shuffle, then cut 80% / 10% / rest; a class of n edges gives round(0.8 n)
    training edges, so small classes keep their share exactly where it can be kept."""
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_train = round(fractions[0] * len(members))
        n_val = round(fractions[1] * len(members))
        if len(members) >= 3:
            n_train = min(max(n_train, 1), len(members) - 2)
            n_val = max(n_val, 1)
        train.append(members[:n_train])
        val.append(members[n_train : n_train + n_val])
        test.append(members[n_train + n_val :])
    return Split(
        fold=fold,
        seed=seed,
        train=np.sort(np.concatenate(train)),
        val=np.sort(np.concatenate(val)),
        test=np.sort(np.concatenate(test)),
    )


def kfold_splits(labels: np.ndarray, k: int, seed: int) -> list[Split]:
    """Stratified k-fold: each class is shuffled (seeded) and dealt round-robin to k parts, so
    the parts are disjoint, cover every edge and hold each class within one edge of n/k. Fold i
    tests on part i, validates on part i + 1 (mod k) and trains on the rest."""
    if k < 3:
        raise ValueError(f"k-fold needs k >= 3 (test, validation and training parts), got {k}")
    rng = np.random.default_rng(seed)
    order = np.concatenate(
        [np.empty(0, dtype=np.int64)]
        + [rng.permutation(np.flatnonzero(labels == label)) for label in np.unique(labels)]
    )
    part = np.empty(len(labels), dtype=np.int64)
    part[order] = np.arange(len(order)) % k
    splits = []
    for fold in range(k):
        val_part = (fold + 1) % k
        train = np.flatnonzero((part != fold) & (part != val_part))
        val, test = np.flatnonzero(part == val_part), np.flatnonzero(part == fold)
        splits.append(Split(fold=fold, seed=seed, train=train, val=val, test=test))
    return splits


def make_splits(
    labels: np.ndarray, folds: int, seed: int, scheme: Scheme = "repeated"
) -> list[Split]:
    """The evaluation splits of ``scheme`` (see the module docstring); a clear error when there
    are too few labelled edges for a non-empty train, validation and test set."""
    if scheme == "repeated":
        splits = [stratified_split(labels, seed + fold, fold) for fold in range(folds)]
        what, hint = "80:10:10", "a class needs at least 3 edges"
    elif scheme == "kfold":
        splits = kfold_splits(labels, folds, seed)
        what, hint = f"into {folds} folds", f"k-fold needs at least {folds} edges"
    else:
        raise ValueError(f"split scheme {scheme!r}: repeated or kfold")
    for split in splits:
        sizes = {"train": len(split.train), "validation": len(split.val), "test": len(split.test)}
        empty = [name for name, size in sizes.items() if size == 0]
        if empty:
            raise ValueError(
                f"too few labelled edges to split {what}: {len(labels)} edge(s) in "
                f"{len(np.unique(labels))} class(es) leave the {' and '.join(empty)} set(s) "
                f"empty in fold {split.fold + 1} ({sizes}); {hint}"
            )
    return splits


def fold_splits(labels: np.ndarray, folds: int, base_seed: int) -> list[Split]:
    """``folds`` repeated stratified 80:10:10 splits (seeds base_seed, base_seed + 1, ...)."""
    return make_splits(labels, folds, base_seed, "repeated")
