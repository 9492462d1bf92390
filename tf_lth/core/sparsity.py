"""Sparse training beyond tickets, as plain NumPy: what each mask update computes.

Pure NumPy (no TensorFlow), one function per idea, read against docs/sparse_training.md:
- `magnitude_mask`: tensorflow-model-optimization's gradual-pruning mask update (keep
  `max(round(size * (1 - sparsity)), 1)` weights, every weight at or above the k-th largest
  magnitude, ties at the threshold kept), per kernel or over several kernels at once, on
  single weights or on blocks along the input axis (magnitudes averaged per block first).
- `m_by_n_mask`: m zeros in every n consecutive weights along the input axis.
- `erk_densities` / `uniform_densities` / `kept_counts`: the layer densities of dynamic
  sparse training at a target sparsity (Evci et al. 2020, "Rigging the Lottery").
- `drop_fraction`, `drop_and_grow`: one RigL or SET update of one kernel.
The compiled versions that run inside a training step must agree with these (tests check).
"""

from __future__ import annotations

import math

import numpy as np

from tf_lth.core import masks


def check_sparsity(name: str, value) -> float:
    """`value` as a float in [0, 1), else ValueError naming `name`."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number in [0, 1). Received: {name}={value!r}") from None
    if not 0.0 <= number < 1.0:
        raise ValueError(f"{name} must be in [0, 1). Received: {name}={value!r}")
    return number


def pruning_window(iterations: int, frequency: int = 100, clamp: bool = True) -> tuple:
    """(begin_step, end_step, frequency) of a gradual schedule inside a budget of
    `iterations`: prune over about 10%..60% of training in whole periods of `frequency`, so
    that end_step is a pruning step, then train the rest at the final sparsity. `clamp`
    shortens the period to a quarter of a short budget (the tfmot baseline's choice)."""
    if clamp:
        frequency = max(1, min(frequency, iterations // 4))
    begin = frequency * int(round(0.1 * iterations / frequency))
    end = begin + frequency * max(1, int(0.5 * iterations / frequency))
    return begin, min(end, iterations), frequency


def kept_for_sparsity(size: int, sparsity: float) -> int:
    """Weights (or units) a tfmot mask update keeps: max(round(size x (1 - sparsity)), 1)
    (round half to even, as tf.math.round)."""
    return max(int(np.round(np.float32(size) * np.float32(1.0 - sparsity))), 1)


def _threshold_mask(scores: np.ndarray, sparsity: float) -> np.ndarray:
    """1 where `scores` >= the k-th largest score (k from `kept_for_sparsity`)."""
    flat = np.sort(scores.reshape(-1))[::-1]
    k = kept_for_sparsity(flat.size, sparsity)
    return (scores >= flat[k - 1]).astype(np.float32)


def magnitude_mask(weights: np.ndarray, sparsity: float, block: int = 1) -> np.ndarray:
    """tfmot's mask update of one kernel at `sparsity` (docs/sparse_training.md)."""
    weights = np.asarray(weights, np.float32)
    if block == 1:
        return _threshold_mask(np.abs(weights), sparsity)
    unit = masks.block_mean(np.abs(weights), block)
    return masks.expand_blocks(_threshold_mask(unit, sparsity), weights.shape, block)


def global_magnitude_mask(kernels: dict, sparsity: float, block: int = 1) -> dict:
    """The same update with one threshold over every kernel of `kernels` ({key: array}):
    `kept_for_sparsity` of all their units together, the largest magnitudes wherever they
    are."""
    units = {key: np.abs(np.asarray(w, np.float32)) if block == 1
             else masks.block_mean(np.abs(np.asarray(w, np.float32)), block)
             for key, w in kernels.items()}
    flat = np.sort(np.concatenate([u.reshape(-1) for u in units.values()]))[::-1]
    threshold = flat[kept_for_sparsity(flat.size, sparsity) - 1]
    result = {}
    for key, unit in units.items():
        kept = (unit >= threshold).astype(np.float32)
        result[key] = kept if block == 1 else masks.expand_blocks(
            kept, np.shape(kernels[key]), block)
    return result


def m_by_n_mask(weights: np.ndarray, m: int = 2, n: int = 4) -> np.ndarray:
    """tfmot's `sparsity_m_by_n=(m, n)`: `m` zeros in every `n` consecutive weights along
    the input axis (axis -2 of a kernel), i.e. the `n - m` largest magnitudes kept (the
    lower index first among ties, as tf.math.top_k)."""
    weights = np.asarray(weights, np.float32)
    if not 0 < m < n:
        raise ValueError(f"sparsity_m_by_n must be (m, n) with 0 < m < n. Received: ({m}, {n})")
    if weights.ndim < 2 or weights.shape[-2] % n:
        raise ValueError(f"sparsity_m_by_n=({m}, {n}) needs a kernel whose input axis is a "
                         f"multiple of {n}. Received shape {weights.shape}")
    moved = np.moveaxis(np.abs(weights), -2, -1)  # input axis last
    groups = moved.reshape(moved.shape[:-1] + (moved.shape[-1] // n, n))
    order = np.argsort(-groups, axis=-1, kind="stable")
    kept = np.zeros_like(groups)
    np.put_along_axis(kept, order[..., :n - m], 1.0, axis=-1)
    return np.moveaxis(kept.reshape(moved.shape), -1, -2).astype(np.float32)


# ---- dynamic sparse training ------------------------------------------------------------
def uniform_densities(shapes: dict, sparsity: float) -> dict:
    """Every kernel at density 1 - sparsity."""
    return {key: 1.0 - sparsity for key in shapes}


def erk_densities(shapes: dict, sparsity: float) -> dict:
    """Erdos-Renyi-Kernel densities ({key: density}): layer l's density is proportional to
    sum(shape_l) / prod(shape_l), scaled so the kept total is (1 - sparsity) of all weights;
    a layer that would exceed density 1 is made dense and the rest rescaled (RigL's
    `get_sparsities_erdos_renyi`, power scale 1)."""
    sizes = {key: int(np.prod(shape)) for key, shape in shapes.items()}
    dense: set = set()
    while True:
        raw = {key: sum(shape) / sizes[key] for key, shape in shapes.items() if key not in dense}
        if not raw:
            return {key: 1.0 for key in shapes}
        kept_rest = (1.0 - sparsity) * sum(sizes.values()) - sum(sizes[key] for key in dense)
        epsilon = kept_rest / sum(raw[key] * sizes[key] for key in raw)
        biggest = max(raw.values())
        if biggest * epsilon <= 1.0:
            break
        dense |= {key for key, value in raw.items() if value == biggest}
    return {key: 1.0 if key in dense else epsilon * raw[key] for key in shapes}


def kept_counts(shapes: dict, densities: dict) -> dict:
    """{key: weights kept}: round(density x size), then the largest rounding remainders get
    the units that make the total exactly round(sum of density x size)."""
    sizes = {key: int(np.prod(shape)) for key, shape in shapes.items()}
    wanted = {key: densities[key] * sizes[key] for key in shapes}
    counts = {key: min(sizes[key], int(math.floor(value))) for key, value in wanted.items()}
    missing = int(round(sum(wanted.values()))) - sum(counts.values())
    by_remainder = sorted(shapes, key=lambda key: -(wanted[key] - math.floor(wanted[key])))
    for key in by_remainder:
        if missing <= 0:
            break
        if counts[key] < sizes[key]:
            counts[key] += 1
            missing -= 1
    return counts


def random_mask(shape: tuple, kept: int, rng: np.random.Generator) -> np.ndarray:
    """A 0/1 mask of `shape` with exactly `kept` ones at uniformly random positions."""
    size = int(np.prod(shape))
    flat = np.zeros(size, np.float32)
    flat[rng.permutation(size)[:kept]] = 1.0
    return flat.reshape(shape)


def drop_fraction(step: int, initial: float, end_step: int) -> float:
    """RigL's cosine decay: initial / 2 x (1 + cos(pi x step / end_step))."""
    return initial / 2.0 * (1.0 + math.cos(math.pi * min(step, end_step) / end_step))


def drop_and_grow(mask: np.ndarray, weights: np.ndarray, fraction: float,
                  grow_scores: np.ndarray) -> tuple:
    """One update of one kernel: drop floor(fraction x active) active weights of smallest
    |w|, grow as many among the positions not kept after the drop, highest `grow_scores`
    first (RigL: |dense gradient|; SET: random numbers). Ties: the lower flat index first.

    Returns (new mask, grown): `grown` marks positions that were inactive before and active
    now (they start at 0 with fresh optimizer moments); a weight dropped and grown back in
    the same update keeps its value.
    """
    mask = np.asarray(mask, np.float32)
    active = int(mask.sum())
    count = int(math.floor(fraction * active))
    flat_mask = mask.reshape(-1)
    drop_scores = np.where(flat_mask > 0, np.abs(np.asarray(weights, np.float32).reshape(-1)),
                           np.inf)
    keep = flat_mask.copy()
    keep[np.argsort(drop_scores, kind="stable")[:count]] = 0.0
    candidates = np.where(keep > 0, -np.inf, np.asarray(grow_scores, np.float32).reshape(-1))
    new = keep.copy()
    new[np.argsort(-candidates, kind="stable")[:count]] = 1.0
    new = new.reshape(mask.shape)
    return new, (new > 0) & (mask == 0)
