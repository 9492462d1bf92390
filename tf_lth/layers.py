"""Masked Keras 3 layers: the core layer of tf_lth (docs/architecture.md, "Core").

A masked layer holds its raw kernel, a 0/1 `mask`, the `frozen` values that pruned
positions take, and, for learned supermasks, trainable `mask_logits`. Layers only apply
masks; `tf_lth.masks` and the trainers (or `tf_lth.prune`) decide them. The exact
semantics are in docs/semantics.md ("Masked layers", "Supermasks").

Masks and frozen values are *not weights*: `layer.weights` and `layer.get_weights()` /
`set_weights()` (and so `model.get_weights()` / `set_weights()`) hold kernels, biases and
supermask logits only, so the usual Keras rewind idiom never resets a mask. They are still
part of `layer.variables`, `.keras` files, `.weights.h5` files and checkpoints.

Supported kinds: Dense, Conv1D, Conv2D, Conv3D, DepthwiseConv2D, SeparableConv2D (both
kernels masked) and EinsumDense. `mask_layer_in_place` turns an existing, built Keras
layer of one of these kinds into its masked twin without copying it (how
`tf_lth.masked` reaches layers of subclassed models).
"""

from __future__ import annotations

import contextlib
import inspect
from typing import NamedTuple

import keras
from keras import ops

from tf_lth.actions import signed_constant
from tf_lth.masks import check_choice

WEIGHT_TRANSFORMS = ("none", "signed_constant")
MASK_SAMPLINGS = ("bernoulli", "round", "topk")
MASK_OPTION_NAMES = (
    "supermask",
    "weight_transform",
    "constant_multiplier",
    "dynamic_scaling",
    "sigmoid_bias",
    "mask_sampling",
    "mask_block",
    "seed",
    "frozen_values",
    "keep_fraction",
)


class MaskSlot(NamedTuple):
    """One masked kernel of a layer and its mask state (variables, not copies)."""

    name: str  # the kernel's variable name: "kernel", "depthwise_kernel", ...
    kernel: object
    mask: object
    frozen: object
    mask_logits: object  # None unless the layer is a supermask


_GOLDEN = 0x9E3779B9


def _lowbias32(x):
    """A 32-bit integer mixing function (Wellons' "lowbias32"): full avalanche, 5 ops."""
    x = ops.bitwise_xor(x, ops.right_shift(x, 16))
    x = ops.multiply(x, ops.convert_to_tensor(0x7FEB352D, "uint32"))
    x = ops.bitwise_xor(x, ops.right_shift(x, 15))
    x = ops.multiply(x, ops.convert_to_tensor(0x846CA68B, "uint32"))
    return ops.bitwise_xor(x, ops.right_shift(x, 16))


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
    positions = ops.cast(ops.arange(_size(shape), dtype="int32"), "uint32")
    bits = _lowbias32(ops.add(_lowbias32(ops.bitwise_xor(positions, k1)), k2))
    noise = ops.cast(ops.right_shift(bits, 8), "float32") * (1.0 / (1 << 24))
    return ops.reshape(noise, shape)


def _size(shape) -> int:
    size = 1
    for dim in shape:
        size *= int(dim)
    return size


class MaskedMixin:
    """Mask state and effective-kernel math shared by every masked layer.

    A subclass names the attributes holding its raw kernel variables in
    `KERNEL_ATTRIBUTES` and the prefixes of their mask-state variables in `SLOT_PREFIXES`
    (`""` gives `mask`, `frozen`, `mask_logits`: the names every single-kernel layer uses).
    """

    KERNEL_ATTRIBUTES: tuple = ("_kernel",)
    SLOT_PREFIXES: tuple = ("",)


    def _conv_bias_and_activation(self, outputs):
        """A convolution's bias (broadcast along its data format) and activation, as the
        stock Keras convolution layers apply them."""
        if self.use_bias:
            if self.data_format == "channels_last":
                bias_shape = (1,) * (self.rank + 1) + (self.filters,)
            else:
                bias_shape = (1, self.filters) + (1,) * self.rank
            outputs = ops.add(outputs, ops.reshape(self.bias, bias_shape))
        if self.activation is not None:
            return self.activation(outputs)
        return outputs

    def _init_mask_options(
        self,
        supermask=False,
        weight_transform="none",
        constant_multiplier=1.0,
        dynamic_scaling=False,
        sigmoid_bias=0.0,
        mask_sampling="bernoulli",
        mask_block=1,
        seed=None,
        frozen_values=True,
        keep_fraction=0.5,
    ):
        check_choice("weight_transform", weight_transform, WEIGHT_TRANSFORMS, "weight_transform")
        if not 0.0 < float(keep_fraction) <= 1.0:
            raise ValueError(f"keep_fraction must be in (0, 1]. "
                             f"Received: keep_fraction={keep_fraction!r}")
        self.keep_fraction = float(keep_fraction)  # mask_sampling="topk" (edge-popup)
        check_choice("mask_sampling", mask_sampling, MASK_SAMPLINGS, "mask_sampling")
        if int(mask_block) not in (1, 4):
            raise ValueError(
                f"mask_block must be 1 or 4 (weights per block along the input axis). "
                f"Received: mask_block={mask_block!r}"
            )
        self.supermask = bool(supermask)
        self.weight_transform = weight_transform
        self.constant_multiplier = float(constant_multiplier)
        self.dynamic_scaling = bool(dynamic_scaling)
        self.sigmoid_bias = float(sigmoid_bias)
        self.mask_sampling = mask_sampling
        self.mask_block = int(mask_block)
        self.seed = seed
        self.frozen_values = bool(frozen_values)
        # A stable name keeps saved variable paths the same in every process.
        self.seed_generator = (
            keras.random.SeedGenerator(seed, name=f"{self.name}_seed") if supermask else None
        )

    def _mask_option_config(self):
        return {
            "supermask": self.supermask,
            "weight_transform": self.weight_transform,
            "constant_multiplier": self.constant_multiplier,
            "dynamic_scaling": self.dynamic_scaling,
            "sigmoid_bias": self.sigmoid_bias,
            "mask_sampling": self.mask_sampling,
            "mask_block": self.mask_block,
            "seed": self.seed,
            "frozen_values": self.frozen_values,
            "keep_fraction": self.keep_fraction,
        }

    def _check_plain_kernel(self):
        if getattr(self, "quantization_mode", None) or getattr(self, "lora_rank", None) \
                or getattr(self, "lora_enabled", False):
            raise ValueError(
                f"Layer '{self.name}': masked layers do not support quantization or LoRA."
            )

    # ---- state ---------------------------------------------------------------------
    def _raw_kernels(self) -> list:
        return [getattr(self, name) for name in self.KERNEL_ATTRIBUTES]

    def _build_mask_state(self):
        kernels = self._raw_kernels()
        if self.supermask:
            # Kernels and bias are fixed; only the mask logits learn.
            for kernel in kernels:
                kernel.trainable = False
            if getattr(self, "bias", None) is not None:
                self.bias.trainable = False
        for prefix, kernel in zip(self.SLOT_PREFIXES, kernels):
            shape = tuple(kernel.shape)
            setattr(self, prefix + "mask", self.add_weight(
                name=prefix + "mask", shape=shape, initializer="ones", trainable=False))
            setattr(self, prefix + "frozen", self.add_weight(
                name=prefix + "frozen", shape=shape, initializer="zeros", trainable=False))
        if self.supermask:
            for prefix, kernel in zip(self.SLOT_PREFIXES, kernels):
                setattr(self, prefix + "mask_logits", self.add_weight(
                    name=prefix + "mask_logits",
                    shape=self.logit_shape(tuple(kernel.shape), self.mask_block),
                    initializer=self._logit_initializer(tuple(kernel.shape)),
                    trainable=True,
                ))
            # 0: evaluation samples a mask; 1: evaluation uses sigmoid(logits) > 0.5.
            # (tf_lth.masked and tf_lth.supermask_mode set 1; the layer's own default is 0.)
            self.use_expected_mask = self.add_weight(
                name="use_expected_mask", shape=(), initializer="zeros", trainable=False
            )
        else:
            for prefix in self.SLOT_PREFIXES:
                setattr(self, prefix + "mask_logits", None)
            self.use_expected_mask = None

    def _logit_initializer(self, kernel_shape):
        """Constant sigmoid_bias; edge-popup scores (topk) U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
        what kaiming_uniform_(a=sqrt(5)) draws (docs/semantics.md, "Edge-popup")."""
        if self.mask_sampling != "topk":
            return keras.initializers.Constant(self.sigmoid_bias)
        bound = 1.0 / max(_size(kernel_shape[:-1]), 1) ** 0.5
        return keras.initializers.RandomUniform(-bound, bound, seed=self.seed)

    def topk_count(self, slot: int = 0) -> int:
        """Scores (weights or blocks) a topk layer keeps: round(keep_fraction * n), >= 1."""
        n = _size(self.masked_kernels[slot].mask_logits.shape)
        return max(1, int(self.keep_fraction * n + 0.5))

    def _topk_scores_mask(self, slot: int = 0):
        """0/1 per score: the top `topk_count` of |score|, ties to the lower index."""
        logits = self.masked_kernels[slot].mask_logits
        n, k = _size(logits.shape), self.topk_count(slot)
        _, indices = ops.top_k(ops.reshape(ops.abs(logits), (n,)), k, sorted=False)
        chosen = ops.scatter(ops.expand_dims(indices, -1), ops.ones((k,), logits.dtype), (n,))
        return ops.reshape(chosen, logits.shape)

    @property
    def masked_kernels(self) -> list:
        """Every masked kernel of this layer as a `MaskSlot`, in order."""
        slots = []
        for prefix, kernel in zip(self.SLOT_PREFIXES, self._raw_kernels()):
            slots.append(MaskSlot(
                name=kernel.name if hasattr(kernel, "name") else prefix + "kernel",
                kernel=kernel,
                mask=getattr(self, prefix + "mask"),
                frozen=getattr(self, prefix + "frozen"),
                mask_logits=getattr(self, prefix + "mask_logits", None),
            ))
        return slots

    @property
    def kernel_variable(self):
        """The raw (unmasked) kernel variable; use it instead of `layer._kernel`.

        Layers with several kernels (SeparableConv2D) have no single one: use
        `layer.masked_kernels`.
        """
        kernels = self._raw_kernels()
        if len(kernels) != 1:
            raise AttributeError(
                f"Layer '{self.name}' masks {len(kernels)} kernels "
                f"({', '.join(self.KERNEL_ATTRIBUTES)}); use layer.masked_kernels."
            )
        return kernels[0]

    def _mask_state_variables(self) -> list:
        """Masks, frozen values and the expected-mask flag: state that is not a weight."""
        state = []
        try:
            slots = self.masked_kernels
        except AttributeError:  # not built yet
            return state
        for slot in slots:
            state += [slot.mask, slot.frozen]
        if self.supermask:
            state.append(self.use_expected_mask)
        return state

    @property
    def weights(self):
        """Kernels, bias and supermask logits; masks and frozen values are not weights.

        So `get_weights()` / `set_weights()` never read or reset a mask. They stay in
        `layer.variables`, in saved files and in checkpoints.
        """
        hidden = {id(variable) for variable in self._mask_state_variables()}
        return [weight for weight in super().weights if id(weight) not in hidden]

    # ---- math ----------------------------------------------------------------------
    @staticmethod
    def logit_shape(kernel_shape, block):
        """Shape of per-block logits: axis -2 holds n // block blocks then n % block singles."""
        if len(kernel_shape) < 2:
            return tuple(kernel_shape)
        n = kernel_shape[-2]
        units = n // block + n % block
        return tuple(kernel_shape[:-2]) + (units, kernel_shape[-1])

    def _expand_blocks(self, values, kernel_shape=None):
        """Repeat per-block values to the kernel's shape along axis -2."""
        if kernel_shape is None:
            kernel_shape = self._raw_kernels()[0].shape
        if self.mask_block == 1 or len(kernel_shape) < 2:
            return values
        n = kernel_shape[-2]
        num_blocks = n // self.mask_block
        if num_blocks == 0:
            return values
        axis = len(kernel_shape) - 2
        values = ops.convert_to_tensor(values)
        blocks = ops.repeat(values[..., :num_blocks, :], self.mask_block, axis=axis)
        if n % self.mask_block == 0:
            return blocks
        return ops.concatenate([blocks, values[..., num_blocks:, :]], axis=axis)

    def raw_weights(self, slot: int = 0):
        """The kernel after the weight transform (signed constants), before masking."""
        kernel = self._raw_kernels()[slot]
        if self.weight_transform == "signed_constant":
            scale = ops.std(kernel) * self.constant_multiplier
            kernel = ops.sign(kernel) * ops.stop_gradient(scale)
        return kernel

    def supermask_probabilities(self, slot: int = 0):
        state = self.masked_kernels[slot]
        return ops.sigmoid(self._expand_blocks(state.mask_logits, state.kernel.shape))

    def current_mask(self, training=False, slot: int = 0):
        """The mask applied in this call: the fixed mask, times a supermask sample if any."""
        state = self.masked_kernels[slot]
        if not self.supermask:
            return state.mask
        shape = state.kernel.shape
        if self.mask_sampling == "topk":
            # Edge-popup: the exact top-k in training and evaluation; straight-through, the
            # mask's gradient reaches |score| unchanged (so the score gets it times sign).
            scores = ops.abs(state.mask_logits)
            topk = ops.stop_gradient(self._topk_scores_mask(slot)) + (
                scores - ops.stop_gradient(scores))  # exactly 0/1 forward
            return state.mask * self._expand_blocks(topk, shape)
        probabilities = self.supermask_probabilities(slot)
        noise = hash_uniform(tuple(state.mask_logits.shape), self.seed_generator.next())
        sampled = ops.cast(
            ops.less(self._expand_blocks(noise, shape), probabilities), probabilities.dtype
        )
        if training:
            if self.mask_sampling == "round":
                # The paper's variant: round(p) on a random half, p itself on the rest.
                half = ops.cast(ops.less(self._expand_blocks(noise, shape), 0.5), "float32")
                forward = half * ops.round(probabilities) + (1.0 - half) * probabilities
            else:
                forward = sampled
            # Straight-through: the sample forward, the gradient of sigmoid(s) backward.
            supermask = (
                ops.stop_gradient(forward) + probabilities - ops.stop_gradient(probabilities)
            )
        else:
            expected = ops.cast(ops.greater(probabilities, 0.5), probabilities.dtype)
            flag = self.use_expected_mask
            supermask = flag * expected + (1.0 - flag) * sampled
        return state.mask * supermask

    def effective_kernel(self, training=False, slot: int = 0):
        """`mask * kernel + (1 - mask) * frozen`, with dynamic rescaling when enabled."""
        state = self.masked_kernels[slot]
        mask = self.current_mask(training=training, slot=slot)
        if self.frozen_values:
            kernel = mask * self.raw_weights(slot) + (1.0 - mask) * state.frozen
        else:  # pruned weights are zero: two elementwise passes fewer per step
            kernel = mask * self.raw_weights(slot)
        if self.dynamic_scaling:
            size = float(_size(state.kernel.shape))
            kept = ops.maximum(ops.sum(ops.stop_gradient(mask)), 1.0)
            kernel = kernel * (size / kept)
        return kernel

    # ---- NumPy views (export, summaries) --------------------------------------------
    def fixed_mask(self, slot: int = 0, supermask_export: str = "expected", rng=None):
        """The 0/1 NumPy mask an exported layer uses: `mask`, times one supermask if any.

        "expected" takes `sigmoid(logits) > 0.5`; "sample" draws one Bernoulli sample per
        logit from `rng` (a `numpy.random.Generator`), as the layer does per block.
        """
        import numpy as np

        if supermask_export not in ("expected", "sample"):
            raise ValueError(
                f"Unknown supermask_export {supermask_export!r}. Allowed: expected, sample. "
                f"Received: supermask_export={supermask_export!r}"
            )
        state = self.masked_kernels[slot]
        mask = np.asarray(state.mask.numpy(), dtype=np.float32)
        if not self.supermask:
            return mask
        logits = np.asarray(state.mask_logits.numpy(), dtype=np.float32)
        if self.mask_sampling == "topk":  # deterministic: the same top-k as the layer
            order = np.argsort(-np.abs(logits).ravel(), kind="stable")
            chosen = np.zeros(logits.size, np.float32)
            chosen[order[:self.topk_count(slot)]] = 1.0
            return mask * expand_blocks_numpy(chosen.reshape(logits.shape), mask.shape,
                                              self.mask_block)
        # The tanh form cannot overflow for large negative logits, unlike 1 / (1 + exp(-x)).
        probabilities = (0.5 * (1.0 + np.tanh(0.5 * logits))).astype(np.float32)
        if supermask_export == "expected":
            chosen = probabilities > 0.5
        else:
            if rng is None:
                raise ValueError(
                    "fixed_mask needs rng (a numpy.random.Generator) when "
                    "supermask_export='sample'. Received: rng=None"
                )
            chosen = rng.random(probabilities.shape, dtype=np.float32) < probabilities
        return mask * expand_blocks_numpy(chosen.astype(np.float32), mask.shape,
                                          self.mask_block)

    def effective_kernel_numpy(self, slot: int = 0, supermask_export: str = "expected",
                               rng=None):
        """`mask * kernel + (1 - mask) * frozen` in NumPy with a fixed mask, for export.

        Exact zeros where pruned (or the frozen values), signed constants and dynamic
        scaling folded in.
        """
        import numpy as np

        state = self.masked_kernels[slot]
        mask = self.fixed_mask(slot, supermask_export, rng)
        kernel = np.asarray(state.kernel.numpy(), dtype=np.float32)
        if self.weight_transform == "signed_constant":
            kernel = signed_constant(kernel, self.constant_multiplier).astype(np.float32)
        frozen = np.asarray(state.frozen.numpy(), dtype=np.float32)
        if not self.frozen_values:  # the layer ignores `frozen`: zeros
            frozen = np.zeros_like(frozen)
        # where() rather than arithmetic: pruned positions get exactly the frozen value.
        baked = np.where(mask > 0, kernel, frozen).astype(np.float32)
        if self.dynamic_scaling:
            baked = baked * np.float32(mask.size / max(float(mask.sum()), 1.0))
        return baked

    # ---- saving --------------------------------------------------------------------
    def _own_variable_list(self):
        variables = list(self._raw_kernels())
        if getattr(self, "bias", None) is not None:
            variables.append(self.bias)
        slots = self.masked_kernels
        for slot in slots:
            variables += [slot.mask, slot.frozen]
        if self.supermask:
            variables += [slot.mask_logits for slot in slots]
            variables += [self.use_expected_mask, self.seed_generator.state]
        return variables

    # Keras layers save only kernel and bias; masked layers keep every variable.
    def save_own_variables(self, store):
        for index, variable in enumerate(self._own_variable_list()):
            store[str(index)] = variable

    def load_own_variables(self, store):
        variables = self._own_variable_list()
        if len(store.keys()) != len(variables):
            raise ValueError(
                f"Layer '{self.name}' expects {len(variables)} saved variables "
                f"(kernel, bias, mask, frozen{', supermask state' if self.supermask else ''}), "
                f"but the file holds {len(store.keys())}."
            )
        for index, variable in enumerate(variables):
            variable.assign(store[str(index)])

    def _finish_build(self):
        self._check_plain_kernel()
        self._build_mask_state()


def expand_blocks_numpy(values, kernel_shape, block: int):
    """NumPy twin of `MaskedMixin._expand_blocks`: per-block values to the kernel's shape."""
    import numpy as np

    if block == 1 or len(kernel_shape) < 2:
        return values
    n = kernel_shape[-2]
    num_blocks = n // block
    axis = len(kernel_shape) - 2
    head = np.repeat(np.take(values, np.arange(num_blocks), axis=axis), block, axis=axis)
    tail = np.take(values, np.arange(num_blocks, values.shape[axis]), axis=axis)
    return np.concatenate([head, tail], axis=axis)


def _split_mask_options(kwargs: dict) -> dict:
    return {name: kwargs.pop(name) for name in MASK_OPTION_NAMES if name in kwargs}


@keras.saving.register_keras_serializable(package="tf_lth")
class MaskedDense(MaskedMixin, keras.layers.Dense):
    """A Dense layer whose kernel is masked, frozen in place, or a learned supermask.

    The effective kernel is `mask * kernel + (1 - mask) * frozen` (docs/semantics.md,
    "Masked layers"). In supermask mode the kernel is frozen and the mask is a Bernoulli
    sample of `sigmoid(mask_logits)` with a straight-through gradient. Gradients reach
    kept weights only.

    Args:
        units: Positive integer, dimensionality of the output space.
        supermask: Whether the mask is learned through trainable logits (kernel frozen).
        weight_transform: "none" or "signed_constant" (`std(kernel) * sign(kernel)`).
        constant_multiplier: Multiplier of the signed constant.
        dynamic_scaling: Multiply the kernel by `size / sum(mask)` at every call.
        sigmoid_bias: Initial value of the mask logits.
        mask_sampling: "bernoulli" or "round" (the paper's rounding variant).
        mask_block: 1 or 4 weights per supermask logit along the input axis.
        seed: Seed of the supermask's Bernoulli samples.
        frozen_values: Whether pruned weights take the `frozen` values; False treats them
            as zeros and skips that term (faster; for the mask-0 action `zero`).
        **kwargs: Arguments of `keras.layers.Dense`.

    Input shape: `(batch, ..., input_dim)`. Output shape: `(batch, ..., units)`.
    """

    def __init__(
        self,
        units,
        supermask=False,
        weight_transform="none",
        constant_multiplier=1.0,
        dynamic_scaling=False,
        sigmoid_bias=0.0,
        mask_sampling="bernoulli",
        mask_block=1,
        seed=None,
        frozen_values=True,
        keep_fraction=0.5,
        **kwargs,
    ):
        super().__init__(units, **kwargs)
        self._init_mask_options(
            supermask,
            weight_transform,
            constant_multiplier,
            dynamic_scaling,
            sigmoid_bias,
            mask_sampling,
            mask_block,
            seed,
            frozen_values,
            keep_fraction,
        )

    def build(self, input_shape):
        if self.quantization_mode or self.lora_rank:
            raise ValueError(f"Layer '{self.name}': masked layers do not support quantization or LoRA.")
        super().build(input_shape)
        self._build_mask_state()

    def call(self, inputs, training=None):
        x = ops.matmul(inputs, self.effective_kernel(training=bool(training)))
        if self.bias is not None:
            x = ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x

    def get_config(self):
        return {**super().get_config(), **self._mask_option_config()}


class _MaskedConvCall:
    """`call` of BaseConv (Conv1D/2D/3D) with the effective kernel; Conv1D's causal padding."""

    def call(self, inputs, training=None):
        padding = self.padding
        if padding == "causal":
            inputs = ops.pad(inputs, self._compute_causal_padding())
            padding = "valid"
        outputs = ops.conv(
            inputs,
            self.effective_kernel(training=bool(training)),
            strides=list(self.strides),
            padding=padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        return self._conv_bias_and_activation(outputs)


@keras.saving.register_keras_serializable(package="tf_lth")
class MaskedConv2D(MaskedMixin, keras.layers.Conv2D):
    """A Conv2D layer whose kernel is masked, frozen in place, or a learned supermask.

    Same state and semantics as `MaskedDense`; blocks of `mask_block` run along the
    input-channel axis of the `(h, w, in, out)` kernel.

    Args:
        filters: Number of output channels.
        kernel_size: Size of the convolution window.
        supermask, weight_transform, constant_multiplier, dynamic_scaling, sigmoid_bias,
        mask_sampling, mask_block, seed, frozen_values: as in `MaskedDense`.
        **kwargs: Arguments of `keras.layers.Conv2D`.

    Input shape: `(batch, h, w, channels)`. Output shape: `(batch, h', w', filters)`.
    """

    def __init__(
        self,
        filters,
        kernel_size,
        supermask=False,
        weight_transform="none",
        constant_multiplier=1.0,
        dynamic_scaling=False,
        sigmoid_bias=0.0,
        mask_sampling="bernoulli",
        mask_block=1,
        seed=None,
        frozen_values=True,
        keep_fraction=0.5,
        **kwargs,
    ):
        super().__init__(filters, kernel_size, **kwargs)
        self._init_mask_options(
            supermask,
            weight_transform,
            constant_multiplier,
            dynamic_scaling,
            sigmoid_bias,
            mask_sampling,
            mask_block,
            seed,
            frozen_values,
            keep_fraction,
        )

    def build(self, input_shape):
        if self.lora_rank:
            raise ValueError(f"Layer '{self.name}': masked layers do not support LoRA.")
        super().build(input_shape)
        self._build_mask_state()

    def call(self, inputs, training=None):
        outputs = self.convolution_op(inputs, self.effective_kernel(training=bool(training)))
        return self._conv_bias_and_activation(outputs)

    def get_config(self):
        return {**super().get_config(), **self._mask_option_config()}


class _OptionsInit:
    """`__init__(*args, <mask options>, **kwargs)` for the masked kinds added later."""

    def __init__(self, *args, **kwargs):
        options = _split_mask_options(kwargs)
        super().__init__(*args, **kwargs)
        self._init_mask_options(**options)

    def build(self, input_shape):
        self._check_plain_kernel()
        super().build(input_shape)
        self._build_mask_state()

    def get_config(self):
        return {**super().get_config(), **self._mask_option_config()}


@keras.saving.register_keras_serializable(package="tf_lth")
class MaskedConv1D(_OptionsInit, _MaskedConvCall, MaskedMixin, keras.layers.Conv1D):
    """A masked `keras.layers.Conv1D` (causal padding included); options as `MaskedDense`.

    Kernel `(width, in, out)`; blocks of `mask_block` run along the input channels.
    """


@keras.saving.register_keras_serializable(package="tf_lth")
class MaskedConv3D(_OptionsInit, _MaskedConvCall, MaskedMixin, keras.layers.Conv3D):
    """A masked `keras.layers.Conv3D`; options as `MaskedDense`. Kernel `(d, h, w, in, out)`."""


@keras.saving.register_keras_serializable(package="tf_lth")
class MaskedDepthwiseConv2D(_OptionsInit, MaskedMixin, keras.layers.DepthwiseConv2D):
    """A masked `keras.layers.DepthwiseConv2D`; options as `MaskedDense`.

    Kernel `(h, w, in, depth_multiplier)`; blocks run along the input channels.
    """

    KERNEL_ATTRIBUTES = ("kernel",)

    def call(self, inputs, training=None):
        input_channel = self._get_input_channel(inputs.shape)
        outputs = ops.depthwise_conv(
            inputs,
            self.effective_kernel(training=bool(training)),
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        if self.use_bias:
            channels = self.depth_multiplier * input_channel
            if self.data_format == "channels_last":
                bias_shape = (1,) * (self.rank + 1) + (channels,)
            else:
                bias_shape = (1, channels) + (1,) * self.rank
            outputs = ops.add(outputs, ops.reshape(self.bias, bias_shape))
        if self.activation is not None:
            return self.activation(outputs)
        return outputs


@keras.saving.register_keras_serializable(package="tf_lth")
class MaskedSeparableConv2D(_OptionsInit, MaskedMixin, keras.layers.SeparableConv2D):
    """A masked `keras.layers.SeparableConv2D`: both kernels carry their own mask.

    The depthwise kernel's state is `depthwise_mask`, `depthwise_frozen`,
    `depthwise_mask_logits`; the pointwise kernel's `pointwise_mask`, ... Options as
    `MaskedDense`.
    """

    KERNEL_ATTRIBUTES = ("depthwise_kernel", "pointwise_kernel")
    SLOT_PREFIXES = ("depthwise_", "pointwise_")

    def call(self, inputs, training=None):
        training = bool(training)
        outputs = ops.separable_conv(
            inputs,
            self.effective_kernel(training=training, slot=0),
            self.effective_kernel(training=training, slot=1),
            strides=self.strides,
            padding=self.padding,
            dilation_rate=self.dilation_rate,
            data_format=self.data_format,
        )
        return self._conv_bias_and_activation(outputs)


@keras.saving.register_keras_serializable(package="tf_lth")
class MaskedEinsumDense(_OptionsInit, MaskedMixin, keras.layers.EinsumDense):
    """A masked `keras.layers.EinsumDense`; options as `MaskedDense`.

    Blocks of `mask_block` run along the kernel's axis -2, whatever the equation makes it.
    """

    def call(self, inputs, training=None):
        x = ops.einsum(self.equation, inputs, self.effective_kernel(training=bool(training)))
        if self.bias is not None:
            x = ops.add(x, self.bias)
        if self.activation is not None:
            x = self.activation(x)
        return x


# Stock Keras kind -> its masked twin. Only these exact classes are masked: a user's
# subclass of Dense may compute something else from its kernel.
MASKED_KINDS = {
    keras.layers.Dense: MaskedDense,
    keras.layers.Conv1D: MaskedConv1D,
    keras.layers.Conv2D: MaskedConv2D,
    keras.layers.Conv3D: MaskedConv3D,
    keras.layers.DepthwiseConv2D: MaskedDepthwiseConv2D,
    keras.layers.SeparableConv2D: MaskedSeparableConv2D,
    keras.layers.EinsumDense: MaskedEinsumDense,
}
PLAIN_KINDS = {masked: plain for plain, masked in MASKED_KINDS.items()}
MASKED_LAYERS = tuple(MASKED_KINDS.values())


def walk_layers(model) -> list:
    """Every layer inside `model`, depth first in the order each holds them, once each.

    (Keras' own `_flatten_layers` lists a nested model's layers in reverse order.)
    """
    found, seen = [], {id(model)}

    def visit(layer):
        for child in layer._layers:
            if id(child) not in seen:
                seen.add(id(child))
                found.append(child)
                visit(child)

    visit(model)
    return found


def masked_layers(model) -> list:
    """The masked layers of a model (any kind of model, nested ones included), in order."""
    return [layer for layer in walk_layers(model) if isinstance(layer, MaskedMixin)]


def plain_kind(layer) -> type:
    """The stock Keras class a masked layer twins (Dense for MaskedDense, ...)."""
    for cls in type(layer).__mro__:
        if cls in PLAIN_KINDS:
            return PLAIN_KINDS[cls]
    raise ValueError(f"{layer!r} is not a tf_lth masked layer.")


def _swap_class(layer, cls) -> None:
    """Changes a built layer's class, keeping Keras' cached view of `call` consistent."""
    layer.__class__ = cls
    signature = inspect.signature(layer.call)
    layer._call_signature = signature
    layer.call_signature_parameters = [p.name for p in signature.parameters.values()]
    layer._call_has_training_arg = "training" in layer.call_signature_parameters
    layer._call_has_mask_arg = "mask" in layer.call_signature_parameters
    layer._call_has_context_arg = {
        arg: arg in layer.call_signature_parameters for arg in layer._call_context_args
    }


@contextlib.contextmanager
def _unlocked(layer):
    """Lets a built layer gain variables, under the name scope it was built in."""
    layer._tracker.unlock()
    scope = keras.name_scope(layer._parent_path) if layer._parent_path else \
        contextlib.nullcontext()
    try:
        with scope:
            yield
    finally:
        layer._tracker.lock()


def mask_layer_in_place(layer, **options):
    """Turns a built stock Keras layer into its masked twin, in place; returns it.

    The layer keeps its identity, name, weights and place in every model holding it; it
    gains a mask of ones, zero frozen values and, with `supermask=True`, mask logits.
    This works for every kind of model, subclassed ones included. Raises ValueError for a
    layer of another kind, or one that is not built yet.
    """
    masked_cls = MASKED_KINDS.get(type(layer))
    if masked_cls is None:
        raise ValueError(
            f"Layer '{layer.name}' ({type(layer).__name__}) is not a kind tf_lth masks. "
            f"Allowed: {', '.join(cls.__name__ for cls in MASKED_KINDS)}."
        )
    if not layer.built:
        raise ValueError(
            f"Layer '{layer.name}' is not built. Build the model first (call it on a batch, "
            "or give it a keras.Input)."
        )
    if getattr(layer, "quantization_mode", None) or getattr(layer, "lora_enabled", False):
        raise ValueError(
            f"Layer '{layer.name}': masked layers do not support quantization or LoRA."
        )
    _swap_class(layer, masked_cls)
    with _unlocked(layer):
        layer._init_mask_options(**options)
        layer._build_mask_state()
    return layer


def unmask_layer_in_place(layer, kernels: list) -> None:
    """The inverse of `mask_layer_in_place`: back to the stock class, raw kernels set to
    `kernels` (NumPy arrays, e.g. the effective kernels), mask state removed."""
    cls = plain_kind(layer)
    for variable, value in zip(layer._raw_kernels(), kernels):
        variable.assign(value)
        variable.trainable = True
    if getattr(layer, "bias", None) is not None:
        layer.bias.trainable = True
    state = layer._mask_state_variables()
    names = [name for name in vars(layer) if any(
        getattr(layer, name) is variable for variable in state)]
    for prefix in layer.SLOT_PREFIXES:
        if getattr(layer, prefix + "mask_logits", None) is not None:
            names.append(prefix + "mask_logits")
    generator = layer.seed_generator
    for name in names:
        delattr(layer, name)
    if generator is not None:
        layer._seed_generators.remove(generator)
    for name in MASK_OPTION_NAMES + ("seed_generator", "use_expected_mask") + tuple(
            prefix + suffix for prefix in layer.SLOT_PREFIXES
            for suffix in ("mask", "frozen", "mask_logits")):
        if name in vars(layer):
            object.__delattr__(layer, name)
    _swap_class(layer, cls)
