"""Lottery tickets around your own training: state, pruning, rewinding, `find_ticket`.

Core layer of tf_lth (docs/architecture.md). `find_ticket` runs the rounds of
`python -m tf_lth.train --experiment=lottery` around a `train_fn` of yours (usually one
`model.fit`): each round's masks and values come from the one round engine,
`tf_lth.core.rounds.next_round`, with the command line's random streams, so the same seed,
batches and schedule give the same masks (docs/semantics.md, "One round engine").

State helpers keep masks and weights apart: `weights_state` / `rewind` cover kernels,
biases, BatchNorm statistics and every other weight, never masks or frozen values;
`get_masks` / `set_masks` cover masks only. `state_of` / `assign_state` are the one
snapshot both these and the run files' `tf_lth.core.models.model_state` use.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging

import keras
import numpy as np

from tf_lth.core import actions, choices, masks
from tf_lth.core import rounds as engine
from tf_lth.core.keras_compat import learning_rate_variable
from tf_lth.core.wrap import kernel_slots

LOG = logging.getLogger("tf_lth")
SCOPES = choices.PRUNE_SCOPES


# ---- state -----------------------------------------------------------------------------
def state_items(variables) -> list:
    """(key, variable) for each of `variables`: its path, made unique with #2, #3..."""
    items, counts = [], {}
    for variable in variables:
        count = counts.get(variable.path, 0) + 1
        counts[variable.path] = count
        items.append((variable.path if count == 1 else f"{variable.path}#{count}", variable))
    return items


def state_of(variables) -> dict:
    """{key: NumPy array} of `variables`, keyed as `state_items` (a sync point).

    The one snapshot of tf_lth: `weights_state` takes it of a model's weights, and
    `tf_lth.core.models.model_state` of all its variables (the run files' `.npz`).
    """
    return {key: np.array(variable.numpy()) for key, variable in state_items(variables)}


def assign_state(variables, state: dict, source: str = "state", error=ValueError,
                 allow_unknown: bool = False, hint: str = "") -> None:
    """Sets `variables` from `state` (a `state_of` them): every name and shape is checked
    before anything is assigned, so a bad state changes nothing.

    Raises `error` naming `source` when a variable is missing from `state`, a shape
    differs, or (unless `allow_unknown`) `state` holds keys of no variable.
    """
    if not isinstance(state, dict):
        raise error(f"{source} must be a dict of arrays{hint}. Received: {type(state).__name__}")
    items = state_items(variables)
    keys = {key for key, _ in items}
    missing = sorted(keys - set(state))
    extra = [] if allow_unknown else sorted(set(state) - keys)
    if missing or extra:
        raise error(
            f"{source} does not match this model's weights{hint}. Missing: "
            f"{missing[:5]}{'...' if len(missing) > 5 else ''}; unknown: "
            f"{extra[:5]}{'...' if len(extra) > 5 else ''}")
    for key, variable in items:
        value = np.asarray(state[key])
        if tuple(value.shape) != tuple(variable.shape):
            raise error(f"{source}: {key} has shape {value.shape}; the model's variable has "
                        f"{tuple(variable.shape)}.")
    for key, variable in items:
        variable.assign(state[key])


def weights_state(model) -> dict:
    """{variable path: NumPy array} of every weight of `model`, masks excluded.

    Kernels, biases, supermask logits, BatchNorm gamma/beta and moving statistics are in;
    masks, frozen values and random-seed states are not. `rewind(model, state)` restores it.
    """
    return state_of(model.weights)


def rewind(model, state: dict, reset_optimizer: bool = False) -> None:
    """Sets every weight of `model` from `state` (a `weights_state`); masks are unchanged.

    Kernel values at pruned positions are restored too, but the layer ignores them (it
    uses its frozen values there). `reset_optimizer=True` also zeroes the state of
    `model.optimizer` (moments, iteration count), as a new round of the paper does.

    Raises:
        ValueError: `state` is not a weights state of this model (names or shapes differ).
    """
    assign_state(model.weights, state,
                 hint=" (is it from tf_lth.weights_state of this model?)")
    if reset_optimizer:
        reset_optimizer_state(getattr(model, "optimizer", None))


def reset_optimizer_state(optimizer) -> None:
    """Zeroes an optimizer's moments and iteration count; keeps its learning rate.

    A learning-rate schedule restarts (its step count is zeroed); the one optimizer reset
    of tf_lth, also behind the command line's `Trainer.reset_optimizer`.
    """
    if optimizer is None or not getattr(optimizer, "built", False):
        return
    learning_rate = learning_rate_variable(optimizer)
    for variable in optimizer.variables:
        if variable is learning_rate or "learning_rate" in variable.path:
            continue
        variable.assign(np.zeros(variable.shape, variable.dtype))


def get_masks(model) -> dict:
    """{kernel key: 0/1 NumPy mask} of every masked kernel (keys as `tf_lth.summary`)."""
    return {slot.key: np.array(slot.mask.numpy()) for slot in kernel_slots(model)}


def get_frozen(model) -> dict:
    """{kernel key: NumPy frozen values} of every masked kernel."""
    return {slot.key: np.array(slot.frozen.numpy()) for slot in kernel_slots(model)}


def set_masks(model, new_masks: dict) -> None:
    """Assigns masks by kernel key; kernels not named keep theirs.

    Raises ValueError for an unknown key, a wrong shape, or values other than 0 and 1.
    """
    slots = {slot.key: slot for slot in kernel_slots(model)}
    unknown = sorted(set(new_masks) - set(slots))
    if unknown:
        raise ValueError(f"Unknown mask keys {unknown}. Allowed: {', '.join(slots)}.")
    for key, value in new_masks.items():
        value = np.asarray(value, dtype=np.float32)
        if value.shape != tuple(slots[key].mask.shape):
            raise ValueError(
                f"Mask {key!r} must have shape {tuple(slots[key].mask.shape)}. "
                f"Received: {value.shape}"
            )
        if not np.all((value == 0) | (value == 1)):
            raise ValueError(f"Mask {key!r} must hold only 0 and 1.")
        slots[key].mask.assign(value)


def assign_round(model, results: dict) -> None:
    """Assigns a round's `{kernel key: (mask, start, frozen)}` (`tf_lth.core.rounds`) to the
    kernels, masks and frozen values of `model`."""
    slots = {slot.key: slot for slot in kernel_slots(model)}
    for key, (mask, start, frozen) in results.items():
        slots[key].kernel.assign(np.asarray(start, np.float32))
        slots[key].mask.assign(np.asarray(mask, np.float32))
        slots[key].frozen.assign(np.asarray(frozen, np.float32))


def weights_remaining(model) -> tuple:
    """(fraction of masked kernel weights kept, {kernel key: fraction kept}), counting the
    weights evaluation uses: a learned supermask's expected mask too (as `summary`)."""
    return engine.weights_remaining({slot.key: slot.layer.fixed_mask(slot.index, "expected")
                                     for slot in kernel_slots(model)})


def kernel_values(model, state: dict, variables=None, what: str = "state",
                  error=ValueError) -> dict:
    """{kernel key: array} of every masked kernel in `state`, a `state_of(variables)`
    (default: `weights_state(model)`, so `variables` is `model.weights`)."""
    variables = model.weights if variables is None else variables
    ids = {id(variable): key for key, variable in state_items(variables)}
    kernels = {}
    for slot in kernel_slots(model):
        key = ids.get(id(slot.kernel), slot.kernel.path)
        if key not in state:
            raise error(f"{what} has no {key!r} (the kernel of {slot.key}); pass a state "
                        "taken from this model.")
        kernels[slot.key] = np.asarray(state[key])
    return kernels


# ---- pruning ---------------------------------------------------------------------------
def _block(block) -> int:
    allowed = {1: 1, 4: 4, "1x1": 1, "1x4": 4}
    if block not in allowed:
        raise ValueError(f"block must be 1x1 or 1x4 (or 1, 4). Received: block={block!r}")
    return allowed[block]


def _rates(slots, fraction) -> dict:
    """{kernel key: rate} for the kernels pruned; a dict names layers or kernel keys."""
    if not isinstance(fraction, dict):
        rates = {slot.key: float(fraction) for slot in slots}
    else:
        allowed = {slot.key for slot in slots} | {slot.layer.name for slot in slots}
        unknown = sorted(set(fraction) - allowed)
        if unknown:
            raise ValueError(
                f"Rates name unknown layers {unknown}. Allowed: {', '.join(sorted(allowed))}."
            )
        rates = {}
        for slot in slots:
            if slot.key in fraction:
                rates[slot.key] = float(fraction[slot.key])
            elif slot.layer.name in fraction:
                rates[slot.key] = float(fraction[slot.layer.name])
    for key, value in rates.items():
        masks.check_fraction(f"rate for {key}", value)
    return rates


def kernel_gradients(model, data, loss=None, kernel_masks: dict | None = None) -> dict:
    """{kernel key: d loss / d raw kernel} at the current weights: the `g_i` of snip and grad.

    `data` is `(x, y)`; `loss(y_true, y_pred)` (mean over the batch) defaults to the
    compiled loss. The masks `kernel_masks` (default: the model's own) are applied and
    pruned weights are 0 (docs/semantics.md, "Mask criteria"); the model's masks and frozen
    values are as before afterwards. The one gradient of tf_lth: the command line's
    lottery rounds and untrained sweep call it too.
    """
    import tensorflow as tf

    x, y = data
    slots = kernel_slots(model)
    saved = [(np.array(slot.mask.numpy()), np.array(slot.frozen.numpy())) for slot in slots]
    try:
        for slot in slots:
            if kernel_masks is not None:
                slot.mask.assign(np.asarray(kernel_masks[slot.key], np.float32))
            slot.frozen.assign(np.zeros(slot.frozen.shape, np.float32))
        with tf.GradientTape() as tape:
            predictions = model(x, training=False)
            if loss is not None:
                value = tf.reduce_mean(loss(y, predictions))
            elif getattr(model, "compiled", False) or getattr(model, "loss", None) is not None:
                value = model.compute_loss(x=x, y=y, y_pred=predictions, training=False)
            else:
                raise ValueError(
                    "The gradient criteria (snip, grad) need a loss: compile the model or "
                    "pass loss=."
                )
        gradients = tape.gradient(value, [slot.kernel for slot in slots])
    finally:
        for slot, (mask, frozen) in zip(slots, saved):
            slot.mask.assign(mask)
            slot.frozen.assign(frozen)
    return {slot.key: np.zeros(slot.kernel.shape, np.float32) if grad is None
            else np.array(grad) for slot, grad in zip(slots, gradients)}


def _check_scope(scope: str) -> None:
    masks.check_choice("scope", scope, SCOPES, "scope")


def prune(
    model,
    fraction,
    criterion: str = "large_final",
    reference: dict | None = None,
    scope: str = "layer",
    block="1x1",
    seed: int = 0,
    rng: np.random.Generator | None = None,
    gradients: dict | None = None,
    data=None,
    loss=None,
) -> dict:
    """Prunes the masked kernels of `model` once, from their current (trained) values.

    Only kept weights are candidates and pruned weights stay pruned. Weights and frozen
    values are not changed; `find_ticket` adds the rewind and the mask-1/mask-0 actions.
    The masks are those of `tf_lth.core.rounds.next_round` (docs/semantics.md, "One round
    engine"), with its order of random draws.

    Args:
        model: A model masked by `tf_lth.masked` (or built by `tf_lth.core.models.build`).
        fraction: The fraction of each kernel's kept weights to prune (floor of
            fraction x kept), or a dict {layer name or kernel key: fraction}; kernels not
            named are not pruned.
        criterion: One of `tf_lth.core.masks.CRITERIA`; `w_final` is the current kernel.
        reference: `tf_lth.weights_state(model)` taken when training started: the `w_init`
            of the criteria in `tf_lth.core.masks.INIT_CRITERIA` (required for them).
        scope: "layer" ranks within each kernel (the paper); "global" ranks all named
            kernels together and prunes floor(fraction x all kept) (or, for a dict, the
            sum of the per-kernel counts), wherever the lowest scores are.
        block: "1x1" (single weights) or "1x4" (blocks of 4 along the input axis).
        seed, rng: Tie breaking and the random criterion (`rng` wins over `seed`).
        gradients: {kernel key: loss gradient at `reference`} for snip and grad; else
            computed on `data=(x, y)` with `loss` (default: the compiled loss).

    Returns:
        {kernel key: new 0/1 mask}.
    """
    _check_scope(scope)
    masks.check_choice("criterion", criterion, masks.CRITERIA, "criterion")
    block = _block(block)
    slots = kernel_slots(model)
    if not slots:
        raise ValueError(f"Model '{model.name}' has no masked layers; call tf_lth.masked first.")
    rates = _rates(slots, fraction)
    w_final = {slot.key: np.array(slot.kernel.numpy()) for slot in slots}
    if criterion in masks.INIT_CRITERIA:
        if reference is None:
            raise ValueError(
                f"Criterion {criterion!r} needs reference=tf_lth.weights_state(model) taken "
                "before training (its w_init)."
            )
        w_init = kernel_values(model, reference, what="reference")
    else:
        w_init = w_final
    grad_init = None
    if criterion in masks.GRADIENT_CRITERIA:
        grad_init = gradients or _gradients_at(model, reference, data, loss)
    arrays = engine.RoundArrays(masks=get_masks(model), frozen=get_frozen(model),
                                w_init=w_init, w_final=w_final, gradients=grad_init)
    rng = np.random.default_rng(seed) if rng is None else rng
    results = engine.next_round(arrays, rates, criterion, rng, scope=scope, block=block,
                                values=False)
    new_masks = {key: mask for key, (mask, _, _) in results.items()}
    set_masks(model, new_masks)
    return new_masks


def _gradients_at(model, state, data, loss) -> dict:
    """`kernel_gradients` at the weights `state` (a `weights_state`; None: the current)."""
    if data is None:
        raise ValueError("snip and grad need gradients= or data=(x, y) to compute them.")
    if state is None:
        return kernel_gradients(model, data, loss)
    current = weights_state(model)
    rewind(model, state)
    try:
        return kernel_gradients(model, data, loss)
    finally:
        rewind(model, current)


# ---- rounds ----------------------------------------------------------------------------
class RewindSnapshot(keras.callbacks.Callback):
    """Takes `weights_state(model)` after training step `step` (late resetting).

    Steps are counted over every `fit` call the callback sees until `reset()`. With
    `steps_per_execution > 1` Keras reports batches in groups; pick a step on a boundary.
    """

    def __init__(self, step: int):
        super().__init__()
        if int(step) < 1:
            raise ValueError(f"step must be >= 1. Received: step={step!r}")
        self.step = int(step)
        self.reset()

    def reset(self) -> None:
        self.state = None
        self.steps_seen = 0

    def on_train_batch_end(self, batch, logs=None):
        self.steps_seen += 1
        if self.state is None and self.steps_seen >= self.step:
            self.state = weights_state(self.model)


@dataclasses.dataclass
class Ticket:
    """The result of `find_ticket`.

    Attributes:
        model: The model, trained in the last round, with the ticket's masks.
        masks: {kernel key: 0/1 mask}.
        frozen: {kernel key: values the pruned weights take (zeros for mask-0 "zero")}.
        start_state: The `weights_state` the last round started from (after the rewind
            and the mask-1 action): retraining the ticket starts here.
        records: One dict per round: round, weights_remaining, kernels, train, evaluation.
    """

    model: object
    masks: dict
    frozen: dict
    start_state: dict
    records: list

    @property
    def weights_remaining(self) -> float:
        return engine.weights_remaining(self.masks)[0]

    def reset(self, model=None):
        """Puts the ticket (masks, frozen values, start weights) into `model`; returns it."""
        model = self.model if model is None else model
        rewind(model, self.start_state, reset_optimizer=True)
        set_masks(model, self.masks)
        slots = {slot.key: slot for slot in kernel_slots(model)}
        for key, value in self.frozen.items():
            slots[key].frozen.assign(value)
        return model


def _train_arguments(train_fn) -> set:
    try:
        return set(inspect.signature(train_fn).parameters)
    except (TypeError, ValueError):
        return set()


def _summarise(result):
    history = getattr(result, "history", None)
    if isinstance(history, dict):
        return {key: float(values[-1]) for key, values in history.items() if len(values)}
    if isinstance(result, (int, float, dict, list, str)) or result is None:
        return result
    return repr(result)


def find_ticket(
    model,
    train_fn,
    rounds: int,
    rate,
    criterion: str = "large_final",
    *,
    rewind_to=0,
    mask_one_action: str = "none",
    mask_zero_action: str = "zero",
    scope: str = "layer",
    block="1x1",
    one_shot: bool = False,
    seed: int = 0,
    evaluate_fn=None,
    gradient_data=None,
    loss=None,
    verbose: int = 1,
) -> Ticket:
    """Iterative pruning with rewinding around your own training: a lottery ticket.

    Round 0 trains the model as it is. Each of the next `rounds` rounds prunes `rate` of
    each kernel's kept weights by `criterion` (w_init: the rewind point, w_final: the
    weights just trained), resets every weight to the rewind point, applies the mask-1
    and mask-0 actions, and trains again. The optimizer's state is zeroed before each
    round. The same seed, batches and schedule give the masks of
    `python -m tf_lth.train --experiment=lottery` (tested).

    Args:
        model: A masked model (`tf_lth.masked(model)`), compiled if `train_fn` needs it.
        train_fn: Trains the model in place, e.g. `lambda model: model.fit(x, y, epochs=2)`.
            If it takes a `callbacks` argument it gets the list to pass to `fit` (the
            rewind snapshot); if it takes `round_index` it gets the round (0, 1, ...).
            What it returns (a History, a number, a dict) goes into the round's record.
        rounds: Pruning rounds after round 0 (so `train_fn` runs rounds + 1 times).
        rate: Fraction pruned per round, or {layer name: fraction} (others not pruned).
        criterion: One of `tf_lth.core.masks.CRITERIA`.
        rewind_to: 0 resets to the initial weights (the lottery ticket); k > 0 to the
            weights after step k of round 0 (late resetting; `train_fn` must take
            `callbacks`); or a `RewindSnapshot` you add to `fit` yourself.
        mask_one_action: Starting values of kept weights: "none" (their values at the
            rewind point: the lottery ticket), "reinit", "reshuffle", ... (tf_lth.core.actions).
        mask_zero_action: Values of pruned weights: "zero" (the lottery ticket),
            "freeze_init", ... (tf_lth.core.actions).
        scope: "layer" (the paper) or "global": one ranking across kernels, pruning each
            round down to the total the per-layer schedule keeps at that round (so both
            scopes keep the same number of weights; `tf_lth.core.masks.global_prune_count`).
        block: "1x1" or "1x4".
        one_shot: Prune once, straight to the level of `rounds` rounds.
        seed: Seed of tie breaking and random actions (round r draws from
            `numpy.random.default_rng([seed, r, 1])`, as the CLI does).
        evaluate_fn: Optional `evaluate_fn(model)` after each round, recorded.
        gradient_data, loss: `(x, y)` and loss for snip and grad.
        verbose: 1 logs one line per round, 0 is silent.

    Returns:
        A `Ticket`: the model, masks, frozen values, start state and one record per round.
    """
    _check_ticket_choices(scope, criterion, mask_one_action, mask_zero_action, rounds)
    block = _block(block)
    rates = _rates(_ticket_slots(model, mask_zero_action), rate)
    arguments = _train_arguments(train_fn)
    snapshot = _rewind_snapshot(rewind_to, arguments)
    own_snapshot = snapshot is not None and not isinstance(rewind_to, RewindSnapshot)

    def train(round_index):
        callbacks = [snapshot] if own_snapshot and round_index == 0 else []
        return _train_round(model, train_fn, arguments, round_index, callbacks, evaluate_fn,
                            verbose)

    initial = weights_state(model)
    start_state = initial
    records = [train(0)]
    if snapshot is not None and snapshot.state is None:
        raise ValueError(
            f"The rewind snapshot at step {snapshot.step} was never taken: round 0 ran "
            f"{snapshot.steps_seen} steps (does train_fn pass callbacks to fit?)."
        )
    reset_state = snapshot.state if snapshot is not None else initial
    for round_index in [1] if one_shot and rounds else list(range(1, int(rounds) + 1)):
        w_init_state = start_state if engine.w_init_is_previous_start(
            mask_zero_action, round_index, one_shot) else reset_state
        arrays = _round_arrays(model, reset_state, criterion, gradient_data, loss,
                               w_init_state)
        rewind(model, reset_state)
        results = engine.next_round(
            arrays, rates, criterion, engine.round_rng(seed, round_index),
            mask_one_action=mask_one_action, mask_zero_action=mask_zero_action, scope=scope,
            block=block, level=int(rounds) if one_shot else round_index, one_shot=one_shot)
        assign_round(model, results)
        start_state = weights_state(model)
        records.append(train(round_index))
    return Ticket(model=model, masks=get_masks(model), frozen=get_frozen(model),
                  start_state=start_state, records=records)


def _check_ticket_choices(scope, criterion, mask_one_action, mask_zero_action,
                          rounds) -> None:
    _check_scope(scope)
    masks.check_choice("criterion", criterion, masks.CRITERIA, "criterion")
    masks.check_choice("mask_one_action", mask_one_action, actions.MASK_ONE_ACTIONS,
                       "mask-1 action")
    masks.check_choice("mask_zero_action", mask_zero_action, actions.MASK_ZERO_ACTIONS,
                       "mask-0 action")
    if int(rounds) < 0:
        raise ValueError(f"rounds must be >= 0. Received: rounds={rounds!r}")


def _ticket_slots(model, mask_zero_action: str) -> list:
    """The kernel slots of a model `find_ticket` can prune; ValueError otherwise."""
    slots = kernel_slots(model)
    if not slots:
        raise ValueError(f"Model '{model.name}' has no masked layers; call tf_lth.masked first.")
    if any(slot.mask_logits is not None for slot in slots):
        raise ValueError("find_ticket prunes fixed masks; this model has supermask layers.")
    if mask_zero_action != "zero" and not all(slot.layer.frozen_values for slot in slots):
        raise ValueError(
            f"mask_zero_action={mask_zero_action!r} needs layers with frozen_values=True."
        )
    return slots


def _rewind_snapshot(rewind_to, arguments: set):
    """The RewindSnapshot of `rewind_to` (reset), or None to rewind to the start."""
    snapshot = rewind_to if isinstance(rewind_to, RewindSnapshot) else None
    if snapshot is None and int(rewind_to) > 0:
        if "callbacks" not in arguments:
            raise ValueError(
                "rewind_to > 0 needs train_fn(model, callbacks) to pass callbacks to fit (or "
                "pass a RewindSnapshot you add to fit yourself as rewind_to)."
            )
        snapshot = RewindSnapshot(int(rewind_to))
    if snapshot is not None:
        snapshot.reset()
    return snapshot


def _train_round(model, train_fn, arguments, round_index, callbacks, evaluate_fn,
                 verbose) -> dict:
    """Runs `train_fn` for one round (optimizer state zeroed first); the round's record."""
    kwargs = {}
    if "callbacks" in arguments:
        kwargs["callbacks"] = callbacks
    if "round_index" in arguments:
        kwargs["round_index"] = round_index
    reset_optimizer_state(getattr(model, "optimizer", None))
    result = train_fn(model, **kwargs)
    fraction, per_kernel = weights_remaining(model)
    record = {"round": round_index, "weights_remaining": fraction, "kernels": per_kernel,
              "train": _summarise(result)}
    if evaluate_fn is not None:
        record["evaluation"] = _summarise(evaluate_fn(model))
    if verbose:
        print(f"tf_lth.find_ticket: round {round_index}: {100 * fraction:.2f}% of weights "
              f"remaining" + (f", evaluation {record['evaluation']}"
                              if "evaluation" in record else ""))
    return record


def _round_arrays(model, reset_state, criterion, gradient_data, loss,
                  w_init_state) -> engine.RoundArrays:
    """The engine's inputs from the model just trained, the reset point (gradients) and
    the state whose kernels are the round's `w_i`."""
    w_final = {slot.key: np.array(slot.kernel.numpy()) for slot in kernel_slots(model)}
    gradients = None
    if criterion in masks.GRADIENT_CRITERIA:
        gradients = _gradients_at(model, reset_state, gradient_data, loss)
    return engine.RoundArrays(
        masks=get_masks(model), frozen=get_frozen(model),
        w_init=kernel_values(model, w_init_state, what="rewind state"), w_final=w_final,
        gradients=gradients)
