"""The eight masked layer kinds: each stock Keras kind with its kernels masked.

Dense, Conv1D, Conv2D, Conv3D, DepthwiseConv2D, SeparableConv2D (both kernels masked),
EinsumDense and Embedding (its table). Each is registered for `.keras` files under the
package "tf_lth" with its class name (e.g. "tf_lth>MaskedDense"). Semantics:
docs/semantics.md, "Masked layers".
"""

from __future__ import annotations

import keras
from keras import ops

from tf_lth.core.layers.mixin import MaskedMixin, split_mask_options


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
        self.init_mask_options(
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
        self.build_mask_state()

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
        self.init_mask_options(
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
        self.build_mask_state()

    def call(self, inputs, training=None):
        outputs = self.convolution_op(inputs, self.effective_kernel(training=bool(training)))
        return self._conv_bias_and_activation(outputs)

    def get_config(self):
        return {**super().get_config(), **self._mask_option_config()}


class _OptionsInit:
    """`__init__(*args, <mask options>, **kwargs)` for the masked kinds added later."""

    def __init__(self, *args, **kwargs):
        options = split_mask_options(kwargs)
        super().__init__(*args, **kwargs)
        self.init_mask_options(**options)

    def build(self, input_shape):
        self._check_plain_kernel()
        super().build(input_shape)
        self.build_mask_state()

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


@keras.saving.register_keras_serializable(package="tf_lth")
class MaskedEmbedding(_OptionsInit, MaskedMixin, keras.layers.Embedding):
    """A masked `keras.layers.Embedding`; options as `MaskedDense`.

    The kernel is the embedding table `(input_dim, output_dim)`: a pruned entry looks up
    as 0 (or its frozen value). Blocks of `mask_block` run along the table's rows.
    """

    KERNEL_ATTRIBUTES = ("embeddings",)

    def call(self, inputs, training=None):
        if inputs.dtype != "int32" and inputs.dtype != "int64":
            inputs = ops.cast(inputs, "int32")
        outputs = ops.take(self.effective_kernel(training=bool(training)), inputs, axis=0)
        return ops.cast(outputs, dtype=self.compute_dtype)


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
    keras.layers.Embedding: MaskedEmbedding,
}
PLAIN_KINDS = {masked: plain for plain, masked in MASKED_KINDS.items()}
MASKED_LAYERS = tuple(MASKED_KINDS.values())
