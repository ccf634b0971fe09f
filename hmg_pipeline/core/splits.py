"""80:10:10 splits of the labelled edges, stratified by class, one per fold seed.

As in the paper, the split is transductive: every edge (its structure and comment features)
takes part in message passing in every fold; only the labels of validation and test edges are
never used for training.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


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


def fold_splits(labels: np.ndarray, folds: int, base_seed: int) -> list[Split]:
    """``folds`` independent stratified splits (seeds base_seed, base_seed + 1, ...); a clear
    error when there are too few labelled edges for a non-empty train, validation and test set."""
    splits = [stratified_split(labels, base_seed + fold, fold) for fold in range(folds)]
    for split in splits:
        sizes = {"train": len(split.train), "validation": len(split.val), "test": len(split.test)}
        empty = [name for name, size in sizes.items() if size == 0]
        if empty:
            raise ValueError(
                f"too few labelled edges to split 80:10:10: {len(labels)} edge(s) in "
                f"{len(np.unique(labels))} class(es) leave the {' and '.join(empty)} set(s) "
                f"empty in fold {split.fold + 1} ({sizes}); a class needs at least 3 edges"
            )
    return splits
