"""Every fixed set of names tf_lth accepts, declared once (docs/semantics.md names each).

Core layer, below everything else: the standard library only, so the pure NumPy modules
(`tf_lth.core.masks`, `tf_lth.core.actions`), the configuration, the CLIs, the API and the exporters
all take their allowed values from here. The order of each tuple is the order error
messages and help texts list the names in.
"""

from __future__ import annotations

# ---- runs (docs/semantics.md, Networks; Training) --------------------------------------------
EXPERIMENTS: tuple[str, ...] = (
    "dense", "lottery", "untrained_supermask", "learned_supermask", "tfmot_baseline",
    "gradual", "dynamic_sparse",
)
ARCHS: tuple[str, ...] = ("fc", "conv2", "conv4", "conv6")
# Datasets built in; every other --dataset name is a tfds image classification dataset.
SYNTHETIC_DATASETS: tuple[str, ...] = ("synthetic", "synthetic_mnist")
OPTIMIZERS: tuple[str, ...] = ("adam", "sgd", "rmsprop")
LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine")
STRATEGIES: tuple[str, ...] = ("default", "mirrored", "multi_worker", "tpu")
JIT_MODES: tuple[str, ...] = ("auto", "on", "off")

# ---- mask criteria (docs/semantics.md, Mask criteria) ----------------------------------------
# Criteria that score each weight; the quadrant criteria select from two rankings instead.
SCORE_CRITERIA: tuple[str, ...] = (
    "large_final",
    "small_final",
    "large_init",
    "small_init",
    "magnitude_increase",
    "movement",
    "random",
    "large_final_same_sign",
    "large_final_diff_sign",
    "magnitude_increase_same_sign",
    "magnitude_increase_diff_sign",
    "snip",
    "grad",
)
QUADRANT_CRITERIA: tuple[str, ...] = ("large_init_large_final", "small_init_small_final")
CRITERIA: tuple[str, ...] = SCORE_CRITERIA[:4] + QUADRANT_CRITERIA + SCORE_CRITERIA[4:]
# These need the loss gradient at initialization (`grad_init`).
GRADIENT_CRITERIA: tuple[str, ...] = ("snip", "grad")
# These read w_init (the weights a round starts from); the others need w_final only.
INIT_CRITERIA: tuple[str, ...] = tuple(
    name for name in CRITERIA if name not in ("large_final", "small_final", "random", "grad")
)

# ---- mask-1 and mask-0 actions (docs/semantics.md, Mask-1 actions; Mask-0 actions) -----------
BASE_MASK_ONE_ACTIONS: tuple[str, ...] = (
    "none",
    "reinit",
    "reshuffle",
    "constant",
    "signed_reinit",
    "signed_reshuffle",
    "signed_constant",
)
# Rescaled variants multiply the starting values by size / kept of the layer.
MASK_ONE_ACTIONS: tuple[str, ...] = BASE_MASK_ONE_ACTIONS + tuple(
    f"{action}_rescaled" for action in BASE_MASK_ONE_ACTIONS if action != "none"
)
MASK_ZERO_ACTIONS: tuple[str, ...] = (
    "zero",
    "freeze_init",
    "freeze_init_zero_mask",  # variant 1
    "freeze_init_zero_all",  # variant 2
    "freeze_init_zero_reshuffle",
    "freeze_init_zero_rev",
)

# ---- pruning (docs/semantics.md, Pruning schedule; Global pruning) ---------------------------
PRUNE_SCOPES: tuple[str, ...] = ("layer", "global")
# Mask granularity (docs/semantics.md, Mask criteria, Blocks): one weight (the paper), or
# 1x4 blocks along the input axis (LiteRT's sparse kernels).
MASK_BLOCKS: tuple[str, ...] = ("1x1", "1x4")
BLOCK_SIZES: tuple[int, ...] = tuple(int(block.split("x")[1]) for block in MASK_BLOCKS)
# Lottery controls: a ticket against a random mask and against a fresh initialisation.
CONTROLS: tuple[str, ...] = ("random", "reinit")

# ---- supermasks (docs/semantics.md, Supermasks) ----------------------------------------------
WEIGHT_TREATMENTS: tuple[str, ...] = ("init", "signed_constant", "rescaled")
SUPERMASK_WEIGHTS: tuple[str, ...] = ("init", "signed_constant")
MASK_SAMPLINGS: tuple[str, ...] = ("bernoulli", "round", "topk")
# What a masked layer does to its kernel before masking (learned supermasks' kernels).
WEIGHT_TRANSFORMS: tuple[str, ...] = ("none", "signed_constant")
# The mask a supermask is evaluated or exported with: the expected mask or one sample.
SUPERMASK_EXPORTS: tuple[str, ...] = ("expected", "sample")
BATCHNORM_MODES: tuple[str, ...] = ("freeze", "update")

# ---- export (docs/semantics.md, Exported models) and tuning ----------------------------------
EXPORT_FORMATS: tuple[str, ...] = (
    "saved_model", "tflite", "tflite_sparse", "tflite_int8", "tflite_sparse_int8",
)
TUNERS: tuple[str, ...] = ("random", "bayesian", "hyperband")
TUNABLE_EXPERIMENTS: tuple[str, ...] = ("dense", "lottery", "learned_supermask")

# ---- sparse training beyond tickets (docs/sparse_training.md) ---------------------------------
SPARSE_METHODS: tuple[str, ...] = ("rigl", "set", "static")
# Experiments whose masks change while training (one round, tf_lth.core.sparse_training).
SPARSE_EXPERIMENTS: tuple[str, ...] = ("gradual", "dynamic_sparse")
SPARSITY_DISTRIBUTIONS: tuple[str, ...] = ("erk", "uniform")
