"""The mask updates of sparse training as TensorFlow ops, for inside a compiled step.

Each function computes what its NumPy twin in `tf_lth.core.sparsity` computes (tests check them
against each other on random kernels); these run under `tf.function` and XLA, so masks can
change at the exact training step a schedule names, also with `steps_per_execution > 1`.
"""

from __future__ import annotations

import math

import tensorflow as tf


def kept_for_sparsity(size, sparsity):
    """max(round(size x (1 - sparsity)), 1) as an int32 tensor (round half to even)."""
    kept = tf.math.round(tf.cast(size, tf.float32) * (1.0 - tf.cast(sparsity, tf.float32)))
    return tf.maximum(tf.cast(kept, tf.int32), 1)


def block_mean(values, block: int):
    """Mean over blocks of `block` along axis -2 (remainder rows alone), as `masks.block_mean`."""
    if block == 1:
        return values
    rows = values.shape[-2]
    full = rows // block * block
    head = values[..., :full, :]
    shape = tf.concat([tf.shape(head)[:-2], [full // block, block, tf.shape(head)[-1]]], 0)
    pooled = tf.reduce_mean(tf.reshape(head, shape), axis=-2)
    return tf.concat([pooled, values[..., full:, :]], axis=-2)


def expand_blocks(units, rows: int, block: int):
    """Per-unit values back to `rows` along axis -2 (the inverse of `block_mean`)."""
    if block == 1:
        return units
    full = rows // block
    head = tf.repeat(units[..., :full, :], block, axis=-2)
    return tf.concat([head, units[..., full:, :]], axis=-2)


def threshold(scores, sparsity):
    """The k-th largest of `scores` (any shape), k = kept_for_sparsity(size, sparsity)."""
    flat = tf.reshape(scores, [-1])
    k = kept_for_sparsity(tf.size(flat), sparsity)
    values, _ = tf.math.top_k(flat, k=tf.size(flat))
    return tf.gather(values, k - 1)


def magnitude_mask(kernel, sparsity, block: int = 1):
    """tfmot's mask update of one kernel: 1 where |w| (block-averaged) >= the threshold."""
    units = block_mean(tf.abs(kernel), block)
    kept = tf.cast(units >= threshold(units, sparsity), kernel.dtype)
    return expand_blocks(kept, kernel.shape[-2], block) if block > 1 else kept


def global_magnitude_masks(kernels: list, sparsity, block: int = 1) -> list:
    """One threshold over all `kernels` (a list of tensors); their masks in the same order."""
    units = [block_mean(tf.abs(kernel), block) for kernel in kernels]
    cut = threshold(tf.concat([tf.reshape(u, [-1]) for u in units], 0), sparsity)
    result = []
    for kernel, unit in zip(kernels, units):
        kept = tf.cast(unit >= cut, kernel.dtype)
        result.append(expand_blocks(kept, kernel.shape[-2], block) if block > 1 else kept)
    return result


def m_by_n_mask(kernel, m: int = 2, n: int = 4):
    """m zeros in every n consecutive weights along the input axis (axis -2): the n - m
    largest |w| of each group kept."""
    rank = len(kernel.shape)
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]  # input axis last
    moved = tf.transpose(tf.abs(kernel), perm)
    groups = tf.reshape(moved, tf.concat([tf.shape(moved)[:-1], [moved.shape[-1] // n, n]], 0))
    _, indices = tf.math.top_k(groups, k=n - m)
    kept = tf.reduce_sum(tf.one_hot(indices, n, dtype=kernel.dtype), axis=-2)
    return tf.transpose(tf.reshape(kept, tf.shape(moved)), perm)


def drop_fraction(step, initial: float, end_step):
    """RigL's cosine decay of the fraction updated, as a float32 tensor (`end_step` may be a
    tensor or a variable)."""
    end = tf.cast(end_step, tf.float32)
    t = tf.minimum(tf.cast(step, tf.float32), end)
    return initial / 2.0 * (1.0 + tf.cos(math.pi * t / end))


def drop_and_grow(mask, kernel, fraction, grow_scores, max_count=None):
    """One RigL/SET update of one kernel (see `tf_lth.core.sparsity.drop_and_grow`): returns
    (new mask, grown), grown as a 0/1 tensor of positions inactive before and active now.

    `max_count` (a Python int), when given, bounds the weights one update moves
    (floor(fraction x active) never exceeds it): the update then picks them by top-k, not by
    sorting the whole kernel (on a 784x300 kernel at 95% sparsity, a tenth of the work).
    """
    flat_mask = tf.reshape(mask, [-1])
    size = int(flat_mask.shape[0])
    k = size if max_count is None else max(1, min(int(max_count), size))
    active = tf.reduce_sum(flat_mask)
    count = tf.cast(tf.floor(tf.cast(fraction, tf.float32) * active), tf.int32)
    inf = tf.constant(float("inf"), kernel.dtype)
    chosen = tf.cast(tf.range(k) < count, flat_mask.dtype)
    # the `count` smallest drop scores, lower index first among ties (top_k's order)
    drop_scores = tf.where(flat_mask > 0, tf.abs(tf.reshape(kernel, [-1])), inf)
    _, order = tf.math.top_k(-drop_scores, k=k)
    dropped = tf.scatter_nd(order[:, None], chosen, [size])
    keep = flat_mask * (1.0 - dropped)
    candidates = tf.where(keep > 0, -inf, tf.cast(tf.reshape(grow_scores, [-1]), kernel.dtype))
    _, order = tf.math.top_k(candidates, k=k)
    grown_flat = tf.scatter_nd(order[:, None], chosen, [size])
    new = tf.reshape(keep + grown_flat, tf.shape(mask))
    grown = tf.reshape(grown_flat * (1.0 - flat_mask), tf.shape(mask))
    return new, grown
