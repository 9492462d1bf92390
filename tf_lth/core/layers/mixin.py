"""`MaskedMixin`: the mask state and effective-kernel math every masked layer shares.

A masked layer holds its raw kernel, a 0/1 `mask`, the `frozen` values that pruned
positions take, and, for learned supermasks, trainable `mask_logits` (docs/semantics.md,
"Masked layers", "Supermasks"). Masks and frozen values are not weights: see
`MaskedMixin.weights`.
"""

from __future__ import annotations

from typing import NamedTuple

import keras
from keras import ops

from tf_lth.core.choices import MASK_SAMPLINGS, WEIGHT_TRANSFORMS
from tf_lth.core.layers.hashing import hash_uniform, shape_size
from tf_lth.core.layers.numpy_views import effective_kernel_numpy, fixed_mask
from tf_lth.core.masks import check_choice

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


def split_mask_options(kwargs: dict) -> dict:
    """Pops the mask options (`MASK_OPTION_NAMES`) out of `kwargs`; returns them."""
    return {name: kwargs.pop(name) for name in MASK_OPTION_NAMES if name in kwargs}


def check_mask_options(weight_transform, mask_sampling, mask_block, keep_fraction) -> None:
    """Raises ValueError for a mask option outside its allowed values."""
    check_choice("weight_transform", weight_transform, WEIGHT_TRANSFORMS, "weight_transform")
    if not 0.0 < float(keep_fraction) <= 1.0:
        raise ValueError(f"keep_fraction must be in (0, 1]. "
                         f"Received: keep_fraction={keep_fraction!r}")
    check_choice("mask_sampling", mask_sampling, MASK_SAMPLINGS, "mask_sampling")
    if int(mask_block) not in (1, 4):
        raise ValueError(
            f"mask_block must be 1 or 4 (weights per block along the input axis). "
            f"Received: mask_block={mask_block!r}"
        )


class MaskedMixin:
    """Mask state and effective-kernel math shared by every masked layer.

    A subclass names the attributes holding its raw kernel variables in
    `KERNEL_ATTRIBUTES` and the prefixes of their mask-state variables in `SLOT_PREFIXES`
    (`""` gives `mask`, `frozen`, `mask_logits`: the names every single-kernel layer uses).
    """

    KERNEL_ATTRIBUTES: tuple = ("_kernel",)
    SLOT_PREFIXES: tuple = ("",)
    # Set while tracing a step by sparse training (tf_lth.core.sparse_training): the kernel's
    # value stays mask * kernel, but its gradient reaches pruned positions too.
    dense_gradient: bool = False

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

    # ---- options -------------------------------------------------------------------
    def init_mask_options(
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
        """Checks and sets the mask options (see `MaskedDense`); a supermask also gets its
        `seed_generator`. Called by `__init__`, and by `mask_layer_in_place`."""
        check_mask_options(weight_transform, mask_sampling, mask_block, keep_fraction)
        self.keep_fraction = float(keep_fraction)  # mask_sampling="topk" (edge-popup)
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
    def raw_kernels(self) -> list:
        """The raw (unmasked) kernel variables, in `KERNEL_ATTRIBUTES` order."""
        return [getattr(self, name) for name in self.KERNEL_ATTRIBUTES]

    def build_mask_state(self):
        """Creates the mask state of every kernel: `mask` (ones), `frozen` (zeros) and, for
        a supermask, trainable `mask_logits` and the `use_expected_mask` flag (kernels and
        bias then stop training). Called at the end of `build`."""
        kernels = self.raw_kernels()
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
        bound = 1.0 / max(shape_size(kernel_shape[:-1]), 1) ** 0.5
        return keras.initializers.RandomUniform(-bound, bound, seed=self.seed)

    def topk_count(self, slot: int = 0) -> int:
        """Scores (weights or blocks) a topk layer keeps: round(keep_fraction * n), >= 1."""
        n = shape_size(self.masked_kernels[slot].mask_logits.shape)
        return max(1, int(self.keep_fraction * n + 0.5))

    def _topk_scores_mask(self, slot: int = 0):
        """0/1 per score: the top `topk_count` of |score|, ties to the lower index."""
        logits = self.masked_kernels[slot].mask_logits
        n, k = shape_size(logits.shape), self.topk_count(slot)
        _, indices = ops.top_k(ops.reshape(ops.abs(logits), (n,)), k, sorted=False)
        chosen = ops.scatter(ops.expand_dims(indices, -1), ops.ones((k,), logits.dtype), (n,))
        return ops.reshape(chosen, logits.shape)

    @property
    def masked_kernels(self) -> list:
        """Every masked kernel of this layer as a `MaskSlot`, in order."""
        slots = []
        for prefix, kernel in zip(self.SLOT_PREFIXES, self.raw_kernels()):
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
        kernels = self.raw_kernels()
        if len(kernels) != 1:
            raise AttributeError(
                f"Layer '{self.name}' masks {len(kernels)} kernels "
                f"({', '.join(self.KERNEL_ATTRIBUTES)}); use layer.masked_kernels."
            )
        return kernels[0]

    def mask_state_variables(self) -> list:
        """Masks, frozen values and the expected-mask flag: state that is not a weight
        ([] before the layer is built)."""
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
        hidden = {id(variable) for variable in self.mask_state_variables()}
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
            kernel_shape = self.raw_kernels()[0].shape
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
        kernel = self.raw_kernels()[slot]
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
        if self.dense_gradient and not self.supermask:
            raw = self.raw_weights(slot)
            kernel = raw + ops.stop_gradient(kernel - raw)
        if self.dynamic_scaling:
            size = float(shape_size(state.kernel.shape))
            kept = ops.maximum(ops.sum(ops.stop_gradient(mask)), 1.0)
            kernel = kernel * (size / kept)
        return kernel

    # ---- NumPy views (export, summaries) --------------------------------------------
    def fixed_mask(self, slot: int = 0, supermask_export: str = "expected", rng=None):
        """The 0/1 NumPy mask an exported layer uses: `mask`, times one supermask if any.

        "expected" takes `sigmoid(logits) > 0.5`; "sample" draws one Bernoulli sample per
        logit from `rng` (a `numpy.random.Generator`), as the layer does per block.
        """
        return fixed_mask(self, slot, supermask_export, rng)

    def effective_kernel_numpy(self, slot: int = 0, supermask_export: str = "expected",
                               rng=None):
        """`mask * kernel + (1 - mask) * frozen` in NumPy with a fixed mask, for export.

        Exact zeros where pruned (or the frozen values), signed constants and dynamic
        scaling folded in.
        """
        return effective_kernel_numpy(self, slot, supermask_export, rng)

    # ---- saving --------------------------------------------------------------------
    def _own_variable_list(self):
        variables = list(self.raw_kernels())
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
