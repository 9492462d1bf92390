"""Counter-based uniform noise for supermask samples (docs/semantics.md, "Supermasks")."""

from __future__ import annotations

from keras import ops

_GOLDEN = 0x9E3779B9


def _lowbias32(x):
    """A 32-bit integer mixing function (Wellons' "lowbias32"): full avalanche, 5 ops."""
    x = ops.bitwise_xor(x, ops.right_shift(x, 16))
    x = ops.multiply(x, ops.convert_to_tensor(0x7FEB352D, "uint32"))
    x = ops.bitwise_xor(x, ops.right_shift(x, 15))
    x = ops.multiply(x, ops.convert_to_tensor(0x846CA68B, "uint32"))
    return ops.bitwise_xor(x, ops.right_shift(x, 16))


def shape_size(shape) -> int:
    """The number of elements of a fully known `shape` (1 for `()`)."""
    size = 1
    for dim in shape:
        size *= int(dim)
    return size


def hash_uniform(shape, seed):
    """Uniform noise in [0, 1) with 24 random bits, one value per position of `shape`.

    A counter-based generator: position i gets `mix(mix(i ^ k1) + k2)`, where (k1, k2)
    are mixed from the two-element `seed` (a `keras.random.SeedGenerator` draw), so the
    same seed gives the same noise under XLA, the plain graph, and any device. It exists
    for speed: a handful of integer ops that XLA fuses into one loop, where a stateless
    Philox draw ran a supermask step 9x slower under XLA on CPU (docs/semantics.md,
    "Supermasks").
    """
    seed = ops.cast(seed, "uint32")
    k1 = _lowbias32(ops.bitwise_xor(seed[0], ops.convert_to_tensor(_GOLDEN, "uint32")))
    k2 = _lowbias32(ops.add(seed[1], k1))
    positions = ops.cast(ops.arange(shape_size(shape), dtype="int32"), "uint32")
    bits = _lowbias32(ops.add(_lowbias32(ops.bitwise_xor(positions, k1)), k2))
    noise = ops.cast(ops.right_shift(bits, 8), "float32") * (1.0 / (1 << 24))
    return ops.reshape(noise, shape)
