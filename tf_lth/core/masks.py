"""Mask criteria and pruning: which weights a round keeps (docs/semantics.md).

Core layer (docs/architecture.md): pure NumPy, no TensorFlow and no model access. A round's
masks come from `tf_lth.core.rounds.next_round`, which ranks with the functions here.

Every criterion ranks the currently kept *units* of one tensor and prunes the lowest.
A unit is one weight (`block=1`, as in the paper) or a 1x4 block along axis -2, the input
axis of a kernel (`block=4`, the granularity LiteRT's sparse kernels run fast on). Ties are
broken at random with the caller's `rng`, and pruned weights never come back.
`compute_mask` ranks within one tensor (per-layer pruning, the paper's); `global_masks`
ranks the units of several tensors together (global pruning, OpenLTH's default).
"""

from __future__ import annotations

import math

import numpy as np

from tf_lth.core import choices

# The registries live in `tf_lth.core.choices`; these names stay here for callers of this module.
SCORE_CRITERIA: tuple[str, ...] = choices.SCORE_CRITERIA
QUADRANT_CRITERIA: tuple[str, ...] = choices.QUADRANT_CRITERIA
CRITERIA: tuple[str, ...] = choices.CRITERIA
# These need the loss gradient at initialization (`grad_init`).
GRADIENT_CRITERIA: tuple[str, ...] = choices.GRADIENT_CRITERIA
# These read w_init (the weights a round starts from); the others need w_final only.
INIT_CRITERIA: tuple[str, ...] = choices.INIT_CRITERIA
BLOCK_SIZES: tuple[int, ...] = choices.BLOCK_SIZES

# Rates are short decimals (0.1, 0.15, 0.2), so `rate * kept` is exact up to float error
# far below this; the tolerance keeps 0.2 * 235200 from flooring to 47039.
_FLOOR_TOLERANCE = 1e-6


def check_choice(argument: str, value: str, allowed: tuple[str, ...], what: str) -> None:
    """ValueError naming the argument and what is allowed, unless `value` is allowed."""
    if value not in allowed:
        raise ValueError(
            f"Unknown {what} {value!r}. Allowed: {', '.join(allowed)}. "
            f"Received: {argument}={value!r}"
        )


def _check_shape(name: str, array: np.ndarray, shape: tuple[int, ...]) -> None:
    if array.shape != shape:
        raise ValueError(
            f"{name} must have the shape of w_init {shape}. Received: {name}.shape={array.shape}"
        )


def check_fraction(name: str, value: float) -> None:
    """ValueError naming `name` unless 0 <= value < 1 (a prune fraction or rate)."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1). Received: {name}={value!r}")


def _check_block(block: int, ndim: int) -> None:
    if block not in BLOCK_SIZES:
        raise ValueError(
            f"block must be one of {', '.join(map(str, BLOCK_SIZES))} (weights per unit along "
            f"the input axis). Received: block={block!r}"
        )
    if block > 1 and ndim < 2:
        raise ValueError(
            f"block={block} needs a kernel with at least 2 dimensions (blocks run along axis "
            f"-2). Received: ndim={ndim}"
        )


def _check_mask(name: str, mask: np.ndarray, shape: tuple[int, ...]) -> None:
    _check_shape(name, mask, shape)
    if not np.all((mask == 0) | (mask == 1)):
        bad = np.unique(mask[(mask != 0) & (mask != 1)])[:5]
        raise ValueError(f"{name} must hold only 0 and 1. Received values: {bad.tolist()}")


# --- Units: single weights or 1x4 blocks along axis -2 -------------------------------------


def num_units(n: int, block: int) -> int:
    """Units along an axis of length `n`: `n // block` blocks, then `n % block` singles."""
    return n // block + n % block


def _row_units(n: int, block: int) -> np.ndarray:
    """The unit index of each of the `n` rows of axis -2."""
    rows = np.arange(n)
    full = n // block * block
    return np.where(rows < full, rows // block, n // block + (rows - full))


def _row_starts(n: int, block: int) -> np.ndarray:
    full = n // block * block
    return np.concatenate([np.arange(0, full, block), np.arange(full, n)]).astype(np.intp)


def _unit_shape(shape: tuple[int, ...], block: int) -> tuple[int, ...]:
    if block == 1:
        return tuple(shape)
    return tuple(shape[:-2]) + (num_units(shape[-2], block), shape[-1])


def block_sum(x: np.ndarray, block: int) -> np.ndarray:
    """Sum of each unit's weights; axis -2 shrinks to `num_units(n, block)`."""
    x = np.asarray(x)
    _check_block(block, x.ndim)
    if block == 1:
        return x.copy()
    return np.add.reduceat(x, _row_starts(x.shape[-2], block), axis=-2)


def block_mean(x: np.ndarray, block: int) -> np.ndarray:
    """Mean of each unit's weights; axis -2 shrinks to `num_units(n, block)`.

    Used for per-block scores and for per-block supermask logits. The mean ranks equal-size
    blocks exactly as the sum does, and puts remainder singles on the same scale.
    """
    x = np.asarray(x)
    _check_block(block, x.ndim)
    if block == 1:
        return x.astype(np.result_type(x, np.float32), copy=True)
    n = x.shape[-2]
    counts = np.diff(np.append(_row_starts(n, block), n))
    return block_sum(x, block) / counts.reshape(-1, 1)


def expand_blocks(u: np.ndarray, shape: tuple[int, ...], block: int) -> np.ndarray:
    """Repeat per-unit values `u` back to a kernel of `shape` (the inverse of `block_mean`)."""
    u = np.asarray(u)
    shape = tuple(shape)
    _check_block(block, len(shape))
    expected = _unit_shape(shape, block)
    if u.shape != expected:
        raise ValueError(
            f"Per-unit values for a kernel of shape {shape} at block={block} must have shape "
            f"{expected}. Received: u.shape={u.shape}"
        )
    if block == 1:
        return u.copy()
    return np.take(u, _row_units(shape[-2], block), axis=-2)


def block_units(shape: tuple[int, ...], block: int) -> np.ndarray:
    """An int array of `shape` giving each weight's unit id (row-major over the units)."""
    unit_shape = _unit_shape(tuple(shape), block)
    ids = np.arange(math.prod(unit_shape), dtype=np.int64).reshape(unit_shape)
    return expand_blocks(ids, tuple(shape), block)


def is_block_structured(mask: np.ndarray, block: int) -> bool:
    """Whether `mask` is constant within every unit of `block` weights along axis -2."""
    mask = np.asarray(mask)
    _check_block(block, mask.ndim)
    if block == 1:
        return True
    unit_max = np.maximum.reduceat(mask, _row_starts(mask.shape[-2], block), axis=-2)
    unit_min = np.minimum.reduceat(mask, _row_starts(mask.shape[-2], block), axis=-2)
    return bool(np.array_equal(unit_max, unit_min))


# --- Schedule -------------------------------------------------------------------------------


def num_to_prune(kept: int, fraction: float) -> int:
    """Weights one round prunes from `kept`: floor(fraction x kept) (docs/semantics.md,
    "Pruning schedule")."""
    if kept < 0:
        raise ValueError(f"kept must be >= 0. Received: kept={kept!r}")
    check_fraction("fraction", fraction)
    return int(math.floor(fraction * kept + _FLOOR_TOLERANCE))


def kept_count(size: int, rate: float, rounds: int) -> int:
    """Weights a layer of `size` keeps after `rounds` rounds that each prune `rate` of it.

    This is `(1 - rate)^rounds` of `size` with the per-round floor (docs/semantics.md,
    "Pruning schedule"); one-shot
    pruning to the level of p rounds prunes `size - kept_count(size, rate, p)` at once.
    """
    if size < 0:
        raise ValueError(f"size must be >= 0. Received: size={size!r}")
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0. Received: rounds={rounds!r}")
    check_fraction("rate", rate)
    kept = int(size)
    for _ in range(int(rounds)):
        kept -= num_to_prune(kept, rate)
    return kept


# --- Scores ---------------------------------------------------------------------------------


def score(
    criterion: str,
    w_init: np.ndarray,
    w_final: np.ndarray,
    rng: np.random.Generator,
    grad_init: np.ndarray | None = None,
) -> np.ndarray:
    """Per-weight scores of a score criterion; higher scores are kept.

    The table is in docs/semantics.md, "Mask criteria".

    The two quadrant criteria keep a region rather than rank a score; `compute_mask` handles
    them.
    """
    check_choice("criterion", criterion, CRITERIA, "criterion")
    if criterion in QUADRANT_CRITERIA:
        raise ValueError(
            f"Criterion {criterion!r} keeps a quadrant and has no per-weight score; use "
            f"compute_mask. Allowed here: {', '.join(SCORE_CRITERIA)}. "
            f"Received: criterion={criterion!r}"
        )
    w_init = np.asarray(w_init, dtype=np.float64)
    w_final = np.asarray(w_final, dtype=np.float64)
    _check_shape("w_final", w_final, w_init.shape)
    if criterion in GRADIENT_CRITERIA:
        if grad_init is None:
            raise ValueError(
                f"Criterion {criterion!r} needs grad_init, the loss gradient at "
                f"initialization. Received: grad_init=None"
            )
        grad_init = np.asarray(grad_init, dtype=np.float64)
        _check_shape("grad_init", grad_init, w_init.shape)

    same_sign = np.sign(w_init) == np.sign(w_final)
    increase = np.abs(w_final) - np.abs(w_init)
    if criterion == "large_final":
        return np.abs(w_final)
    if criterion == "small_final":
        return -np.abs(w_final)
    if criterion == "large_init":
        return np.abs(w_init)
    if criterion == "small_init":
        return -np.abs(w_init)
    if criterion == "magnitude_increase":
        return increase
    if criterion == "movement":
        return np.abs(w_final - w_init)
    if criterion == "random":
        return rng.random(w_init.shape)
    if criterion == "large_final_same_sign":
        return np.where(same_sign, np.abs(w_final), 0.0)
    if criterion == "large_final_diff_sign":
        return np.where(same_sign, 0.0, np.abs(w_final))
    if criterion == "magnitude_increase_same_sign":
        return np.where(same_sign, increase, 0.0)
    if criterion == "magnitude_increase_diff_sign":
        return np.where(same_sign, 0.0, increase)
    if criterion == "snip":
        return np.abs(grad_init * w_init)
    return np.abs(grad_init)  # grad


# --- Pruning --------------------------------------------------------------------------------


def _score_order(unit_scores: np.ndarray, candidates: np.ndarray, rng) -> np.ndarray:
    """Candidate unit ids, lowest score first, ties in random order."""
    ids = np.flatnonzero(candidates)
    tie_break = rng.random(ids.size)
    return ids[np.lexsort((tie_break, unit_scores[ids]))]


def _lowest_units(unit_scores: np.ndarray, candidates: np.ndarray, rng,
                  target: int) -> np.ndarray:
    """The first `target` ids of `_score_order` as a set, found by partition (linear
    time) instead of a full sort; draws the same tie-breaks from `rng`."""
    ids = np.flatnonzero(candidates)
    tie_break = rng.random(ids.size)
    if target >= ids.size:
        return ids
    if target <= 0:
        return ids[:0]
    values = unit_scores[ids]
    kth = np.partition(values, target - 1)[target - 1]
    below = np.flatnonzero(values < kth)
    tied = np.flatnonzero(values == kth)
    tied = tied[np.argsort(tie_break[tied], kind="stable")[: target - below.size]]
    return ids[np.concatenate([below, tied])]


def _quadrant_keys(unit_init: np.ndarray, unit_final: np.ndarray, candidates: np.ndarray,
                   rng) -> tuple:
    """(candidate unit ids, a distinct integer key per id): the quadrant rule prunes the
    lowest keys first.

    With n candidates, the percentile q = 100 p / (n - 1) of a candidate array is its p-th
    smallest value. A unit survives q if both its values are at or above their tensor's
    percentile q, that is iff min(rank_init, rank_final) > p, where a value's rank counts
    the values <= it (tied values share their highest rank). Pruning in increasing order
    of that minimum rank therefore removes every unit below each percentile before any
    unit above it, and continuing in that order, ties at random, meets the target exactly.
    """
    ids = np.flatnonzero(candidates)
    rank = np.minimum(_ranks_at_or_below(unit_init[ids]), _ranks_at_or_below(unit_final[ids]))
    tie_break = rng.random(ids.size)
    tie_rank = np.empty(ids.size, dtype=np.int64)
    tie_rank[np.argsort(tie_break, kind="stable")] = np.arange(ids.size)
    return ids, rank * ids.size + tie_rank


def _quadrant_order(unit_init: np.ndarray, unit_final: np.ndarray, candidates: np.ndarray,
                    rng) -> np.ndarray:
    """Candidate unit ids in the order the quadrant rule prunes them (`_quadrant_keys`)."""
    ids, keys = _quadrant_keys(unit_init, unit_final, candidates, rng)
    return ids[np.argsort(keys)]


def _lowest_keys(ids: np.ndarray, keys: np.ndarray, target: int) -> np.ndarray:
    """The `target` ids of lowest (distinct) key, by partition rather than a full sort."""
    if target >= ids.size:
        return ids
    if target <= 0:
        return ids[:0]
    return ids[np.argpartition(keys, target - 1)[:target]]


def _ranks_at_or_below(values: np.ndarray) -> np.ndarray:
    """Each value's count of values <= it (tied values share their highest rank), as
    `np.searchsorted(np.sort(values), values, side="right")` gives, from one sort."""
    order = np.argsort(values)  # the order within a run of ties does not change ranks
    ordered = values[order]
    n = values.size
    run_ends = np.r_[ordered[1:] != ordered[:-1], True]
    # at each sorted position: 1 + the position where its run of equal values ends
    ends = np.where(run_ends, np.arange(1, n + 1), n)
    ranks = np.empty(n, dtype=np.int64)
    ranks[order] = np.minimum.accumulate(ends[::-1])[::-1]
    return ranks


def _take_units(order: np.ndarray, sizes: np.ndarray, target: int) -> np.ndarray:
    """Units to prune: lowest first while the pruned weights stay <= target.

    A unit that would overshoot is skipped, so later smaller units (remainder singles) can
    still fill the target exactly.
    """
    cumulative = np.cumsum(sizes[order])
    num_prefix = int(np.searchsorted(cumulative, target, side="right"))
    chosen = list(order[:num_prefix])
    remaining = target - (int(cumulative[num_prefix - 1]) if num_prefix else 0)
    rest = order[num_prefix:]
    while remaining > 0 and rest.size:
        fits = np.flatnonzero(sizes[rest] <= remaining)
        if fits.size == 0:
            break
        unit = rest[fits[0]]
        chosen.append(unit)
        remaining -= int(sizes[unit])
        rest = rest[fits[0] + 1 :]
    return np.asarray(chosen, dtype=np.int64)


def _prepare(mask, fraction, num_prune, block, shape):
    """Checks the mask and target; returns (mask, unit sizes, candidate units, target)."""
    mask = np.asarray(mask, dtype=np.float32)
    _check_mask("mask", mask, shape)
    check_fraction("fraction", fraction)
    _check_block(block, len(shape))
    sizes = block_sum(mask.astype(np.int64), block).ravel()
    kept = int(sizes.sum())
    if num_prune is None:
        target = num_to_prune(kept, fraction)
    else:
        if int(num_prune) != num_prune or not 0 <= num_prune <= kept:
            raise ValueError(
                f"num_prune must be an integer in [0, {kept}] (the weights still kept). "
                f"Received: num_prune={num_prune!r}"
            )
        target = int(num_prune)
    return mask, sizes, sizes > 0, target


def _apply(mask, shape, block, sizes, order, target, pruned=None) -> np.ndarray:
    """The mask with the units `_take_units` picks from `order` (or `pruned`) removed."""
    unit_kept = sizes > 0
    unit_kept[_take_units(order, sizes, target) if pruned is None else pruned] = False
    keep = expand_blocks(unit_kept.reshape(_unit_shape(shape, block)), shape, block)
    # Multiplying by the old mask keeps already-pruned weights of a partly kept unit pruned.
    return (mask * keep).astype(np.float32)


def prune(
    scores: np.ndarray,
    mask: np.ndarray,
    fraction: float,
    rng: np.random.Generator | None = None,
    num_prune: int | None = None,
    block: int = 1,
) -> np.ndarray:
    """Prunes the lowest-scored kept units: floor(fraction x kept) weights, or `num_prune`.

    Units of `block` weights are ranked by their mean score. Returns a float32 0/1 mask.
    """
    scores = np.asarray(scores, dtype=np.float64)
    shape = scores.shape
    mask, sizes, candidates, target = _prepare(mask, fraction, num_prune, block, shape)
    rng = np.random.default_rng(0) if rng is None else rng
    order = _score_order(block_mean(scores, block).ravel(), candidates, rng)
    return _apply(mask, shape, block, sizes, order, target)


def compute_mask(
    criterion: str,
    w_init: np.ndarray,
    w_final: np.ndarray,
    mask: np.ndarray,
    fraction: float,
    rng: np.random.Generator | None = None,
    grad_init: np.ndarray | None = None,
    num_prune: int | None = None,
    block: int = 1,
) -> np.ndarray:
    """The next mask of one tensor under `criterion` (docs/semantics.md, "Mask criteria").

    Only currently kept weights (mask == 1) are candidates; floor(fraction x kept) of them
    are pruned, or exactly `num_prune` (one-shot pruning to a level). With `block=4`, whole
    1x4 units along axis -2 are ranked and pruned, and the target (in weights) is met by
    skipping units that would overshoot; see `_quadrant_keys` for the quadrant criteria.

    Returns:
        A float32 0/1 array shaped like `w_init`, never 1 where `mask` is 0.
    """
    check_choice("criterion", criterion, CRITERIA, "criterion")
    w_init = np.asarray(w_init, dtype=np.float64)
    w_final = np.asarray(w_final, dtype=np.float64)
    shape = w_init.shape
    _check_shape("w_final", w_final, shape)
    mask, sizes, candidates, target = _prepare(mask, fraction, num_prune, block, shape)
    rng = np.random.default_rng(0) if rng is None else rng
    if criterion in QUADRANT_CRITERIA:
        sign = 1.0 if criterion == "large_init_large_final" else -1.0
        unit_init = sign * block_mean(np.abs(w_init), block).ravel()
        unit_final = sign * block_mean(np.abs(w_final), block).ravel()
        if block == 1:  # every candidate is one weight: the `target` lowest keys are pruned
            ids, keys = _quadrant_keys(unit_init, unit_final, candidates, rng)
            pruned = _lowest_keys(ids, keys, target)
            return _apply(mask, shape, block, sizes, None, target, pruned=pruned)
        order = _quadrant_order(unit_init, unit_final, candidates, rng)
    else:
        scores = score(criterion, w_init, w_final, rng, grad_init=grad_init)
        unit_scores = block_mean(scores, block).ravel()
        if block == 1:  # every candidate is one weight: the `target` lowest are pruned
            pruned = _lowest_units(unit_scores, candidates, rng, target)
            return _apply(mask, shape, block, sizes, None, target, pruned=pruned)
        order = _score_order(unit_scores, candidates, rng)
    return _apply(mask, shape, block, sizes, order, target)


def one_shot_mask(
    criterion: str,
    w_init: np.ndarray,
    w_final: np.ndarray,
    rate: float,
    rounds: int,
    rng: np.random.Generator | None = None,
    grad_init: np.ndarray | None = None,
    block: int = 1,
) -> np.ndarray:
    """A dense tensor pruned in one shot to the level of `rounds` rounds at `rate`.

    The same mask as `tf_lth.core.rounds.next_round(..., one_shot=True)` from a dense mask with
    the same `rng` (docs/semantics.md, "Pruning schedule").
    """
    w_init = np.asarray(w_init)
    target = w_init.size - kept_count(w_init.size, rate, rounds)
    return compute_mask(
        criterion,
        w_init,
        w_final,
        np.ones(w_init.shape, dtype=np.float32),
        0.0,
        rng=rng,
        grad_init=grad_init,
        num_prune=target,
        block=block,
    )


def global_masks(
    criterion: str,
    w_init: dict,
    w_final: dict,
    masks: dict,
    fraction: float = 0.0,
    rng: np.random.Generator | None = None,
    grad_init: dict | None = None,
    num_prune: int | None = None,
    block: int = 1,
) -> dict:
    """The next masks of several tensors ranked together (global pruning).

    Every tensor's kept units are scored as `compute_mask` scores them (raw scores, not
    normalised per tensor) and pooled; floor(fraction x all kept weights), or exactly
    `num_prune` weights, of the lowest-scored units are pruned, wherever they are. So a
    tensor whose scores run small loses more than its share. The quadrant criteria take
    their percentiles over the pooled units. With one tensor this is `compute_mask`,
    with the same use of `rng`.

    Args:
        w_init, w_final, masks: {name: array} with the same names and shapes.
        grad_init: {name: gradient}, for snip and grad.

    Returns:
        {name: float32 0/1 array}, in the order of `w_init`.
    """
    check_choice("criterion", criterion, CRITERIA, "criterion")
    names = list(w_init)
    if set(w_final) != set(names) or set(masks) != set(names):
        raise ValueError(
            "w_init, w_final and masks must name the same tensors. Received: "
            f"w_init={sorted(w_init)}, w_final={sorted(w_final)}, masks={sorted(masks)}"
        )
    if not names:
        return {}
    rng = np.random.default_rng(0) if rng is None else rng
    check_fraction("fraction", fraction)
    shapes, prepared, unit_sizes = {}, {}, []
    for name in names:
        wi = np.asarray(w_init[name], dtype=np.float64)
        _check_shape("w_final", np.asarray(w_final[name]), wi.shape)
        mask = np.asarray(masks[name], dtype=np.float32)
        _check_mask("mask", mask, wi.shape)
        _check_block(block, wi.ndim)
        shapes[name] = wi.shape
        prepared[name] = mask
        unit_sizes.append(block_sum(mask.astype(np.int64), block).ravel())
    sizes = np.concatenate(unit_sizes)
    kept = int(sizes.sum())
    if num_prune is None:
        target = num_to_prune(kept, fraction)
    elif int(num_prune) != num_prune or not 0 <= num_prune <= kept:
        raise ValueError(
            f"num_prune must be an integer in [0, {kept}] (the weights still kept). "
            f"Received: num_prune={num_prune!r}"
        )
    else:
        target = int(num_prune)
    candidates = sizes > 0
    if criterion in QUADRANT_CRITERIA:
        sign = 1.0 if criterion == "large_init_large_final" else -1.0
        unit_init = np.concatenate([sign * block_mean(np.abs(np.asarray(w_init[n], np.float64)),
                                                      block).ravel() for n in names])
        unit_final = np.concatenate([sign * block_mean(np.abs(np.asarray(w_final[n], np.float64)),
                                                       block).ravel() for n in names])
        order = _quadrant_order(unit_init, unit_final, candidates, rng)
    else:
        unit_scores = []
        for name in names:
            gradient = None if grad_init is None else grad_init.get(name)
            scores = score(criterion, w_init[name], w_final[name], rng, grad_init=gradient)
            unit_scores.append(block_mean(scores, block).ravel())
        order = _score_order(np.concatenate(unit_scores), candidates, rng)
    unit_kept = candidates.copy()
    unit_kept[_take_units(order, sizes, target)] = False
    result, offset = {}, 0
    for name, count in zip(names, (len(item) for item in unit_sizes)):
        shape = shapes[name]
        keep = expand_blocks(unit_kept[offset:offset + count].reshape(_unit_shape(shape, block)),
                             shape, block)
        result[name] = (prepared[name] * keep).astype(np.float32)
        offset += count
    return result


def global_prune_count(masks: dict, rates: dict, level: int) -> int:
    """Weights global pruning takes so that the total kept equals the per-layer schedule's.

    After `level` rounds, per-layer pruning keeps `kept_count(size, rate, level)` of each
    tensor; global pruning at the same rates prunes the current total kept down to the sum
    of those, so both scopes keep the same number of weights at every level (how they are
    spread over the tensors differs). `masks` and `rates` are keyed by tensor name.
    """
    kept = sum(int(np.asarray(masks[name]).sum()) for name in rates)
    target = sum(kept_count(np.asarray(masks[name]).size, rate, level)
                 for name, rate in rates.items())
    return max(kept - target, 0)


def scheduled_prune_count(mask: np.ndarray, rate: float, one_shot_rounds: int | None = None) -> int:
    """Weights per-layer pruning takes from one tensor this round.

    floor(rate x kept), or, for one-shot pruning to the level of `one_shot_rounds` rounds,
    `kept - kept_count(size, rate, one_shot_rounds)`. Global pruning at per-layer rates
    prunes the sum of these over the tensors, so both scopes keep the same total.
    """
    mask = np.asarray(mask)
    kept = int(mask.sum())
    if one_shot_rounds is None:
        return num_to_prune(kept, rate)
    return max(kept - kept_count(mask.size, rate, one_shot_rounds), 0)
