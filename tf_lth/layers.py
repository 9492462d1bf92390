"""Masked Keras 3 layers: the core layer of tf_lth (DESIGN.md, "A masked layer's state").

A masked layer holds its raw kernel, a 0/1 `mask`, the `frozen` values that pruned
positions take, and, for learned supermasks, trainable `mask_logits`. Layers only apply
masks; `tf_lth.masks` and the trainers decide them.
"""

from __future__ import annotations

import keras
from keras import ops

WEIGHT_TRANSFORMS = ("none", "signed_constant")
MASK_SAMPLINGS = ("bernoulli", "round")


def _check_choice(name, value, allowed):
    if value not in allowed:
        raise ValueError(
            f"Unknown {name} {value!r}. Allowed: {', '.join(allowed)}. "
            f"Received: {name}={value!r}"
        )


class MaskedMixin:
    """Mask state and effective-kernel math shared by MaskedDense and MaskedConv2D."""

    def _init_mask_options(
        self,
        supermask,
        weight_transform,
        constant_multiplier,
        dynamic_scaling,
        sigmoid_bias,
        mask_sampling,
        mask_block,
        seed,
        frozen_values=True,
    ):
        _check_choice("weight_transform", weight_transform, WEIGHT_TRANSFORMS)
        _check_choice("mask_sampling", mask_sampling, MASK_SAMPLINGS)
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
        }

    def _build_mask_state(self):
        shape = tuple(self._kernel.shape)
        if self.supermask:
            # Kernel and bias are fixed; only the mask logits learn.
            self._kernel.trainable = False
            if self.bias is not None:
                self.bias.trainable = False
        self.mask = self.add_weight(
            name="mask", shape=shape, initializer="ones", trainable=False
        )
        self.frozen = self.add_weight(
            name="frozen", shape=shape, initializer="zeros", trainable=False
        )
        if self.supermask:
            self.mask_logits = self.add_weight(
                name="mask_logits",
                shape=self.logit_shape(shape, self.mask_block),
                initializer=keras.initializers.Constant(self.sigmoid_bias),
                trainable=True,
            )
            # 0: evaluation samples a mask; 1: evaluation uses sigmoid(logits) > 0.5.
            self.use_expected_mask = self.add_weight(
                name="use_expected_mask", shape=(), initializer="zeros", trainable=False
            )
        else:
            self.mask_logits = None
            self.use_expected_mask = None

    @staticmethod
    def logit_shape(kernel_shape, block):
        """Shape of per-block logits: axis -2 holds n // block blocks then n % block singles."""
        n = kernel_shape[-2]
        units = n // block + n % block
        return tuple(kernel_shape[:-2]) + (units, kernel_shape[-1])

    def _expand_blocks(self, values):
        """Repeat per-block values to the kernel's shape along axis -2."""
        if self.mask_block == 1:
            return values
        n = self._kernel.shape[-2]
        num_blocks = n // self.mask_block
        if num_blocks == 0:
            return values
        axis = len(self._kernel.shape) - 2
        values = ops.convert_to_tensor(values)
        blocks = ops.repeat(values[..., :num_blocks, :], self.mask_block, axis=axis)
        if n % self.mask_block == 0:
            return blocks
        return ops.concatenate([blocks, values[..., num_blocks:, :]], axis=axis)

    def raw_weights(self):
        """The kernel after the weight transform (signed constants), before masking."""
        kernel = self._kernel
        if self.weight_transform == "signed_constant":
            scale = ops.std(kernel) * self.constant_multiplier
            kernel = ops.sign(kernel) * ops.stop_gradient(scale)
        return kernel

    def supermask_probabilities(self):
        return ops.sigmoid(self._expand_blocks(self.mask_logits))

    def current_mask(self, training=False):
        """The mask applied in this call: the fixed mask, times a supermask sample if any."""
        if not self.supermask:
            return self.mask
        probabilities = self.supermask_probabilities()
        noise = keras.random.uniform(
            ops.shape(self.mask_logits), seed=self.seed_generator
        )
        sampled = ops.cast(
            ops.less(self._expand_blocks(noise), probabilities), probabilities.dtype
        )
        if training:
            if self.mask_sampling == "round":
                # The paper's variant: round(p) on a random half, p itself on the rest.
                half = ops.cast(ops.less(self._expand_blocks(noise), 0.5), "float32")
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
        return self.mask * supermask

    def effective_kernel(self, training=False):
        """`mask * kernel + (1 - mask) * frozen`, with dynamic rescaling when enabled."""
        mask = self.current_mask(training=training)
        if self.frozen_values:
            kernel = mask * self.raw_weights() + (1.0 - mask) * self.frozen
        else:  # pruned weights are zero: two elementwise passes fewer per step
            kernel = mask * self.raw_weights()
        if self.dynamic_scaling:
            size = 1.0
            for dim in self._kernel.shape:
                size *= int(dim)
            kept = ops.maximum(ops.sum(ops.stop_gradient(mask)), 1.0)
            kernel = kernel * (size / kept)
        return kernel

    def _own_variable_list(self):
        variables = [self._kernel]
        if self.bias is not None:
            variables.append(self.bias)
        variables += [self.mask, self.frozen]
        if self.supermask:
            variables += [self.mask_logits, self.use_expected_mask, self.seed_generator.state]
        return variables

    # Keras' Dense/Conv save only kernel and bias; masked layers keep every variable.
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


@keras.saving.register_keras_serializable(package="tf_lth")
class MaskedDense(MaskedMixin, keras.layers.Dense):
    """A Dense layer whose kernel is masked, frozen in place, or a learned supermask.

    The effective kernel is `mask * kernel + (1 - mask) * frozen` (SPEC.md sections 5-6).
    In supermask mode (SPEC.md section 7) the kernel is frozen and the mask is a Bernoulli
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
        )

    def build(self, input_shape):
        if self.lora_rank:
            raise ValueError(f"Layer '{self.name}': masked layers do not support LoRA.")
        super().build(input_shape)
        self._build_mask_state()

    def call(self, inputs, training=None):
        outputs = self.convolution_op(inputs, self.effective_kernel(training=bool(training)))
        if self.use_bias:
            if self.data_format == "channels_last":
                bias_shape = (1,) * (self.rank + 1) + (self.filters,)
            else:
                bias_shape = (1, self.filters) + (1,) * self.rank
            outputs = ops.add(outputs, ops.reshape(self.bias, bias_shape))
        if self.activation is not None:
            return self.activation(outputs)
        return outputs

    def get_config(self):
        return {**super().get_config(), **self._mask_option_config()}


MASKED_LAYERS = (MaskedDense, MaskedConv2D)


def masked_layers(model) -> list:
    """The masked layers of a model, in order."""
    return [layer for layer in model._flatten_layers() if isinstance(layer, MASKED_LAYERS)]
