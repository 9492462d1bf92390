"""One lottery round's masks and values: the engine every driver calls.

Core layer of tf_lth (docs/architecture.md): pure NumPy, importing only `tf_lth.core.masks`,
`tf_lth.core.actions` and the name registry `tf_lth.core.choices`. What a round does to the masks
and values (docs/semantics.md, "One round engine") is `next_round`: arrays in, one
`{kernel key: (mask, start, frozen)}` out, in one documented order of random draws. The
command line's lottery runs, `tf_lth.prune`, `tf_lth.find_ticket` and the untrained
supermask sweep call it; the controls of a lottery round call `control_round`. Drivers
only read the arrays from their models or files and assign the results back.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from tf_lth.core import actions, choices, masks

SCOPES: tuple[str, ...] = choices.PRUNE_SCOPES
CONTROLS: tuple[str, ...] = choices.CONTROLS
# Purposes of the seeded streams `default_rng([seed, round, purpose])` (docs/semantics.md,
# "One round engine"): the ticket's round, the random control's positions, and each
# control's actions (its purpose plus CONTROL_ACTIONS_OFFSET).
TICKET_PURPOSE = 1
CONTROL_PURPOSES = {"random": 11, "reinit": 12}
CONTROL_ACTIONS_OFFSET = 100
FRESH_INIT_PURPOSE = 7919


@dataclasses.dataclass(frozen=True)
class RoundArrays:
    """A round's inputs, each a {kernel key: array} in model order.

    masks and frozen: the previous round's masks and frozen values; w_init: the reset
    point (the `w_i` of the criteria and actions; for variant 2 after round 1, the
    previous round's starting kernel: `w_init_is_previous_start`); w_final: the weights
    just trained;
    gradients: the loss gradients at the reset point, for snip and grad (else None).
    """

    masks: dict
    frozen: dict
    w_init: dict
    w_final: dict
    gradients: dict | None = None

    def __post_init__(self):
        keys = list(self.masks)
        for name in ("frozen", "w_init", "w_final"):
            if sorted(getattr(self, name)) != sorted(keys):
                raise ValueError(
                    f"RoundArrays.{name} must name the kernels of masks {keys}. Received: "
                    f"{sorted(getattr(self, name))}")
        if self.gradients is not None and not set(keys) <= set(self.gradients):
            missing = sorted(set(keys) - set(self.gradients))
            raise ValueError(f"RoundArrays.gradients lacks the kernels {missing}.")

    @property
    def keys(self) -> list:
        return list(self.masks)


def round_rng(seed: int, round_index: int, purpose: int = TICKET_PURPOSE) -> np.random.Generator:
    """The seeded stream `default_rng([seed, round_index, purpose])` of a round."""
    return np.random.default_rng([int(seed), int(round_index), int(purpose)])


def w_init_is_previous_start(mask_zero_action: str, round_index: int, one_shot: bool) -> bool:
    """Whether round `round_index`'s `w_i` is the previous round's starting kernel rather
    than the reset point (docs/semantics.md, "Mask-0 actions").

    Variant 2 (freeze_init_zero_all) zeroes the start of kept weights that shrank, and the
    authors' code compares each round's final weights with the values that round started
    from, so a start once zeroed stays 0 in every later round. For every other action with
    the mask-1 action `none`, the previous start of a weight that was kept equals the reset
    point, so both readings agree and the reset point is used. Round 1 and one-shot runs
    start from the reset point."""
    return mask_zero_action == "freeze_init_zero_all" and not one_shot and round_index > 1


def weights_remaining(kernel_masks: dict) -> tuple:
    """(fraction of all masked weights kept, {key: fraction kept}) of {key: 0/1 mask}."""
    kept = sum(float(np.asarray(mask).sum()) for mask in kernel_masks.values())
    size = sum(np.asarray(mask).size for mask in kernel_masks.values())
    return ((kept / size if size else 1.0),
            {key: float(np.asarray(mask).mean()) for key, mask in kernel_masks.items()})


def _check_rates(rates: dict, keys: list) -> None:
    unknown = sorted(set(rates) - set(keys))
    if unknown:
        raise ValueError(f"rates name unknown kernels {unknown}. Allowed: {', '.join(keys)}.")
    for key, rate in rates.items():
        masks.check_fraction(f"rate for {key}", rate)


def _global_prune_count(prev: dict, rates: dict, level: int | None) -> int:
    """Global pruning's count: down to the per-layer schedule's total at `level`, or
    without a level the sum of the per-kernel floor(rate x kept)."""
    if level is None:
        return sum(masks.scheduled_prune_count(prev[key], rates[key]) for key in prev)
    return masks.global_prune_count(prev, rates, level)


def _global_round_masks(arrays, rates, criterion, rng, block, level) -> dict:
    """The new masks of the kernels with a rate, ranked together (their draws first)."""
    prev = {key: np.asarray(arrays.masks[key], np.float32) for key in arrays.keys if key in rates}
    return masks.global_masks(
        criterion, {key: arrays.w_init[key] for key in prev},
        {key: arrays.w_final[key] for key in prev}, prev, 0.0, rng=rng,
        grad_init=arrays.gradients, num_prune=_global_prune_count(prev, rates, level),
        block=block)


def _layer_round_mask(arrays, key, rate, criterion, rng, block, level, one_shot):
    """One kernel's new mask ranked within the kernel (the paper's per-layer pruning)."""
    prev = np.asarray(arrays.masks[key], np.float32)
    num_prune = masks.scheduled_prune_count(prev, rate, level) if one_shot else None
    gradient = None if arrays.gradients is None else arrays.gradients[key]
    return masks.compute_mask(criterion, arrays.w_init[key], arrays.w_final[key], prev, rate,
                              rng=rng, grad_init=gradient, num_prune=num_prune, block=block)


def next_round(
    arrays: RoundArrays,
    rates: dict,
    criterion: str,
    rng: np.random.Generator,
    *,
    mask_one_action: str = "none",
    mask_zero_action: str = "zero",
    scope: str = "layer",
    block: int = 1,
    level: int | None = None,
    one_shot: bool = False,
    values: bool = True,
) -> dict:
    """The masks, start values and frozen values of the next round, per kernel key.

    How many are pruned (docs/semantics.md, "Pruning schedule", "Global pruning"):
    - scope "layer": floor(rate x kept) of each kernel; with `one_shot`, each kernel is
      pruned to the level `level` in one go, `max(kept - kept_count(size, rate, level), 0)`
      (`masks.scheduled_prune_count`): from a dense mask that is `size - kept_count`, and
      a kernel already at or below the level loses nothing.
    - scope "global": with a `level`, down to the total the per-layer schedule keeps at
      that level (`masks.global_prune_count`), one-shot or not; without one, the sum of
      the kernels' floor(rate x kept).
    A kernel absent from `rates` is ranked at rate 0 by "layer" (its draws are taken,
    nothing is pruned) and left out of the "global" ranking; it gets the actions too.

    Random draws, all from `rng`, in this order:
    - "layer": kernel by kernel in the order of `arrays.masks`: its mask
      (`masks.compute_mask`: the random criterion's scores, then one tie-break per kept
      unit), then its mask-1 action (reinit, reshuffle, constant: one permutation), then
      its mask-0 action (freeze_init_zero_reshuffle: one choice).
    - "global": first the pooled ranking (`masks.global_masks`: the random criterion's
      scores kernel by kernel, then one tie-break per pooled unit), then kernel by kernel
      its mask-1 and its mask-0 action.

    `values=False` (a mask only: `tf_lth.prune`, the untrained sweep) skips the actions;
    start and frozen are then None, and the masks and draws are those of the actions
    "none" and "zero", which draw nothing.

    Returns:
        {kernel key: (mask, start, frozen)} in the order of `arrays.masks`, as
        `actions.next_round_values` defines start and frozen.
    """
    masks.check_choice("criterion", criterion, masks.CRITERIA, "criterion")
    masks.check_choice("scope", scope, SCOPES, "scope")
    masks.check_choice("mask_one_action", mask_one_action, actions.MASK_ONE_ACTIONS,
                       "mask-1 action")
    masks.check_choice("mask_zero_action", mask_zero_action, actions.MASK_ZERO_ACTIONS,
                       "mask-0 action")
    if one_shot and level is None:
        raise ValueError("one_shot=True needs level, the prune level pruned to.")
    _check_rates(rates, arrays.keys)
    pooled = (_global_round_masks(arrays, rates, criterion, rng, block, level)
              if scope == "global" else {})
    results = {}
    for key in arrays.keys:
        prev = np.asarray(arrays.masks[key], np.float32)
        if scope == "layer":
            mask = _layer_round_mask(arrays, key, rates.get(key, 0.0), criterion, rng, block,
                                     level, one_shot)
        else:
            mask = pooled.get(key, prev)
        if not values:
            results[key] = (mask, None, None)
            continue
        start, frozen = actions.next_round_values(
            mask_one_action, mask_zero_action, arrays.w_init[key], arrays.w_final[key], mask,
            prev, arrays.frozen[key], rng)
        results[key] = (mask, start, frozen)
    return results


def random_mask_like(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 0/1 mask with `mask`'s shape and kept count at random positions (one permutation)."""
    mask = np.asarray(mask)
    flat = np.zeros(mask.size, np.float32)
    flat[rng.permutation(mask.size)[:int(mask.sum())]] = 1.0
    return flat.reshape(mask.shape)


def fresh_init_seed(seed: int, round_index: int, index: int) -> int:
    """The seed of the reinit control's fresh initializer draw for kernel number `index`."""
    return int(np.random.default_rng(
        [int(seed), int(round_index), int(index), FRESH_INIT_PURPOSE]).integers(2 ** 31 - 1))


def control_round(
    kind: str,
    ticket_masks: dict,
    arrays: RoundArrays,
    seed: int,
    round_index: int,
    *,
    mask_one_action: str = "none",
    mask_zero_action: str = "zero",
    fresh_init: dict | None = None,
) -> dict:
    """A control of round `round_index`'s ticket: {kernel key: (mask, start, frozen)}.

    "random": each kernel keeps the ticket's kept count at random positions, drawn kernel
    by kernel from `round_rng(seed, round_index, 11)`; its values come from the round's
    own `w_i`. "reinit": the ticket's masks on `fresh_init` (a new draw of each kernel's
    initializer, seeded by `fresh_init_seed`). Both then apply the ticket's mask-1 and
    mask-0 actions, kernel by kernel, from `round_rng(seed, round_index, purpose + 100)`
    (purpose 11 or 12); a position the control prunes counts as pruned now, so the
    previous mask is `max(previous mask, control mask)`.
    """
    masks.check_choice("kind", kind, CONTROLS, "control")
    if kind == "reinit":
        if fresh_init is None or sorted(fresh_init) != sorted(arrays.keys):
            raise ValueError("The reinit control needs fresh_init for every kernel.")
        control = {key: np.asarray(ticket_masks[key], np.float32) for key in arrays.keys}
        starts = fresh_init
    else:
        positions = round_rng(seed, round_index, CONTROL_PURPOSES[kind])
        control = {key: random_mask_like(ticket_masks[key], positions) for key in arrays.keys}
        starts = arrays.w_init
    rng = round_rng(seed, round_index, CONTROL_PURPOSES[kind] + CONTROL_ACTIONS_OFFSET)
    results = {}
    for key in arrays.keys:
        mask = control[key]
        prev = np.maximum(np.asarray(arrays.masks[key], np.float32), mask)
        start, frozen = actions.next_round_values(
            mask_one_action, mask_zero_action, starts[key], arrays.w_final[key], mask, prev,
            arrays.frozen[key], rng)
        results[key] = (mask, start, frozen)
    return results
