"""Mask-1 and mask-0 actions: the values a layer's weights take for the next round.

Core layer (docs/architecture.md): pure NumPy. Mask-1 actions set the starting values of
the kept weights; mask-0 actions set the frozen values of the pruned weights
(docs/semantics.md, "Mask-1 actions" and "Mask-0 actions"). A trainer assigns `start` to the kernel and `frozen` to the layer's `frozen`
variable, so the effective kernel `mask * start + (1 - mask) * frozen` is well defined.
"""

from __future__ import annotations

import numpy as np

from tf_lth.core import choices
from tf_lth.core.masks import check_choice


def signed_constant(w: np.ndarray, multiplier: float = 1.0) -> np.ndarray:
    """`std(w) * multiplier * sign(w)`: the paper's signed constant for a whole tensor."""
    w = np.asarray(w)
    return np.sign(w) * (np.std(w) * multiplier)

# The registries live in `tf_lth.core.choices`; these names stay here for callers of this module.
# Rescaled variants multiply the starting values by size / kept of the layer.
MASK_ONE_ACTIONS: tuple[str, ...] = choices.MASK_ONE_ACTIONS
MASK_ZERO_ACTIONS: tuple[str, ...] = choices.MASK_ZERO_ACTIONS


def _check_shape(name: str, array: np.ndarray, shape: tuple[int, ...]) -> None:
    if array.shape != shape:
        raise ValueError(
            f"{name} must have the shape of w_init {shape}. Received: {name}.shape={array.shape}"
        )


def _as_mask(name: str, mask: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    mask = np.asarray(mask)
    _check_shape(name, mask, shape)
    if not np.all((mask == 0) | (mask == 1)):
        raise ValueError(f"{name} must hold only 0 and 1. Received: {np.unique(mask)[:5]}")
    return mask == 1


def _as_values(w_init: np.ndarray) -> np.ndarray:
    w_init = np.asarray(w_init)
    if not np.issubdtype(w_init.dtype, np.floating):
        w_init = w_init.astype(np.float32)
    return w_init


def mask_one_values(
    action: str, w_init: np.ndarray, mask: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Starting values for the next round: the action's value where kept, 0 where pruned.

    reinit draws without replacement from a shuffle of all of the layer's w_init; reshuffle
    permutes the kept weights' own w_init among the kept positions; constant is c x s with
    c = std(w_init) of the layer and s the layer's signs of w_init, shuffled. signed_* take
    the magnitude and use sign(w_init) of the position instead (docs/semantics.md).
    """
    check_choice("action", action, MASK_ONE_ACTIONS, "mask-1 action")
    w_init = _as_values(w_init)
    kept = _as_mask("mask", mask, w_init.shape)
    base = action.removesuffix("_rescaled")
    signed = base.startswith("signed_")
    kind = base.removeprefix("signed_")

    if kind == "none":
        values = w_init.copy()
    elif kind == "reinit":
        values = rng.permutation(w_init.ravel()).reshape(w_init.shape)
    elif kind == "reshuffle":
        values = w_init.copy()
        values[kept] = rng.permutation(w_init[kept])
    else:  # constant
        values = signed_constant(w_init)
        if not signed:  # the constant with shuffled signs
            values = rng.permutation(values.ravel()).reshape(w_init.shape)
    if signed:
        values = np.abs(values) * np.sign(w_init)
    if action.endswith("_rescaled"):
        # Keeps the layer's output scale: the kept weights stand in for all of them.
        values = values * (w_init.size / max(int(kept.sum()), 1))
    return np.where(kept, values, 0).astype(w_init.dtype)


def mask_zero_values(
    action: str,
    w_init: np.ndarray,
    w_final: np.ndarray,
    new_mask: np.ndarray,
    prev_mask: np.ndarray,
    prev_frozen: np.ndarray | None,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Values of the pruned weights, and which kept weights start the next round at 0.

    Weights pruned this round (prev_mask 1, new_mask 0) get the action's value
    (docs/semantics.md, "Mask-0 actions"); weights pruned earlier keep `prev_frozen` (zeros
    when None); kept positions hold 0. "Shrank" below means abs(w_final) < abs(w_init).

    Returns:
        (frozen, zero_start): `zero_start` marks, for freeze_init_zero_all (variant 2), the
        kept weights that shrank; it is all False for the other actions.
    """
    check_choice("action", action, MASK_ZERO_ACTIONS, "mask-0 action")
    w_init = _as_values(w_init)
    shape = w_init.shape
    w_final = np.asarray(w_final)
    _check_shape("w_final", w_final, shape)
    kept = _as_mask("new_mask", new_mask, shape)
    was_kept = _as_mask("prev_mask", prev_mask, shape)
    if np.any(kept & ~was_kept):
        raise ValueError(
            "new_mask keeps weights that prev_mask pruned; pruned weights never come back. "
            f"Received: {int(np.sum(kept & ~was_kept))} such positions"
        )
    if prev_frozen is None:
        prev_frozen = np.zeros(shape, dtype=w_init.dtype)
    prev_frozen = np.asarray(prev_frozen)
    _check_shape("prev_frozen", prev_frozen, shape)

    newly_pruned = was_kept & ~kept
    shrank = np.abs(w_final) < np.abs(w_init)
    if action == "zero":
        to_zero = newly_pruned
    elif action == "freeze_init":
        to_zero = np.zeros(shape, dtype=bool)
    elif action in ("freeze_init_zero_mask", "freeze_init_zero_all"):
        to_zero = newly_pruned & shrank
    elif action == "freeze_init_zero_reshuffle":
        # Control for variant 1: the same number of zeros, at random positions.
        candidates = np.flatnonzero(newly_pruned)
        count = int(np.sum(newly_pruned & shrank))
        to_zero = np.zeros(w_init.size, dtype=bool)
        to_zero[rng.choice(candidates, size=count, replace=False)] = True
        to_zero = to_zero.reshape(shape)
    else:  # freeze_init_zero_rev: the opposite choice to variant 1
        to_zero = newly_pruned & ~shrank

    frozen = np.where(newly_pruned, np.where(to_zero, 0, w_init), 0)
    frozen = np.where(was_kept, frozen, prev_frozen).astype(w_init.dtype)
    if action == "freeze_init_zero_all":
        zero_start = kept & shrank
    else:
        zero_start = np.zeros(shape, dtype=bool)
    return frozen, zero_start


def next_round_values(
    mask_one_action: str,
    mask_zero_action: str,
    w_init: np.ndarray,
    w_final: np.ndarray,
    new_mask: np.ndarray,
    prev_mask: np.ndarray,
    prev_frozen: np.ndarray | None,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Kernel start values and frozen values for the next round, both shaped like w_init.

    `start` holds the mask-1 values where kept (0 where variant 2 zeroes a kept weight) and
    the frozen values where pruned, so the kernel alone already equals the effective kernel.
    """
    check_choice("mask_one_action", mask_one_action, MASK_ONE_ACTIONS, "mask-1 action")
    check_choice("mask_zero_action", mask_zero_action, MASK_ZERO_ACTIONS, "mask-0 action")
    start = mask_one_values(mask_one_action, w_init, new_mask, rng)
    frozen, zero_start = mask_zero_values(
        mask_zero_action, w_init, w_final, new_mask, prev_mask, prev_frozen, rng
    )
    kept = np.asarray(new_mask) == 1
    start = np.where(zero_start, 0, start)
    start = np.where(kept, start, frozen).astype(start.dtype)
    return start, frozen
