"""The validated, frozen configuration of one run, and the paper's presets per network.

Core layer of tf_lth: the CLI turns flags into a `Config` once; nothing below reads flags.
"""

from __future__ import annotations

import dataclasses
import math

EXPERIMENTS = ("dense", "lottery", "untrained_supermask", "learned_supermask", "tfmot_baseline")
ARCHS = ("fc", "conv2", "conv4", "conv6")
OPTIMIZERS = ("adam", "sgd", "rmsprop")
STRATEGIES = ("default", "mirrored", "multi_worker", "tpu")
EXPORT_FORMATS = ("saved_model", "tflite", "tflite_sparse", "tflite_int8", "tflite_sparse_int8")
WEIGHT_TREATMENTS = ("init", "signed_constant", "rescaled")
SUPERMASK_WEIGHTS = ("init", "signed_constant")
MASK_SAMPLINGS = ("bernoulli", "round", "topk")
CONTROLS = ("random", "reinit")  # docs/semantics.md: a ticket against its controls
LR_SCHEDULES = ("constant", "cosine")
SUPERMASK_EXPORTS = ("expected", "sample")
MASK_BLOCKS = ("1x1", "1x4")
PRUNE_SCOPES = ("layer", "global")
JIT_MODES = ("auto", "on", "off")
SYNTHETIC_DATASETS = ("synthetic", "synthetic_mnist")  # built in; other names are tfds'

# docs/semantics.md, Training and Pruning schedule: optimizer, learning rate, batch, epochs per round, prune rates.
ARCH_PRESETS = {
    "fc": dict(learning_rate=1.2e-3, epochs=55, rates={"conv": 0.0, "dense": 0.2, "output": 0.1}),
    "conv2": dict(learning_rate=2e-4, epochs=27, rates={"conv": 0.1, "dense": 0.2, "output": 0.1}),
    "conv4": dict(learning_rate=3e-4, epochs=34, rates={"conv": 0.1, "dense": 0.2, "output": 0.1}),
    "conv6": dict(learning_rate=3e-4, epochs=40, rates={"conv": 0.15, "dense": 0.2, "output": 0.1}),
}
# docs/semantics.md, Supermasks: the learned-supermask preset.
SUPERMASK_PRESET = dict(optimizer="sgd", learning_rate=100.0, momentum=0.9, batch_size=250)


class ConfigError(ValueError):
    """A flag value that is not allowed; the message names the flag."""


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of one run, typed and checked (the flag names)."""

    experiment: str = "dense"
    dataset: str = "mnist"
    data_dir: str | None = None
    validation_size: int | None = None
    arch: str = "fc"
    epochs: float | None = None
    iterations: int | None = None
    batch_size: int = 60
    optimizer: str = "adam"
    learning_rate: float | None = None
    momentum: float = 0.9
    eval_every: int = 100
    seed: int = 0
    deterministic: bool = False
    run_dir: str = ""
    resume: bool = False
    overwrite: bool = False
    criterion: str = "large_final"
    rounds: int = 0
    prune_rates: tuple = ()
    one_shot: bool = False
    rewind_iteration: int = 0
    mask_one_action: str = "none"
    mask_zero_action: str = "zero"
    mask_block: str = "1x1"
    prune_scope: str = "layer"
    source_run: str | None = None
    prune_levels: tuple = ()
    weight_treatments: tuple = ("init", "signed_constant", "rescaled")
    supermask_weights: str = "init"
    sigmoid_bias: float = 0.0
    constant_multiplier: float = 1.0
    mask_sampling: str = "bernoulli"
    keep_fraction: float = 0.5
    lr_schedule: str = "constant"
    weight_decay: float = 0.0
    controls: tuple = ()
    dynamic_scaling: bool = False
    eval_samples: int = 10
    supermask_export: str = "expected"
    strategy: str = "default"
    export: tuple = ()
    checkpoint_every: int = 0
    jit_compile: str = "auto"
    download: bool = True
    progress: bool = True

    @property
    def rates(self) -> dict:
        return dict(self.prune_rates)

    @property
    def criteria(self) -> list:
        return [name for name in self.criterion.split(",") if name]

    @property
    def block_size(self) -> int:
        return int(self.mask_block.split("x")[1])

    def train_iterations(self, steps_per_epoch: int) -> int:
        """The per-round budget in iterations (from --iterations, else --epochs)."""
        if self.iterations:
            return int(self.iterations)
        return max(1, int(round(self.epochs * steps_per_epoch)))


def _choice(flag, value, allowed):
    if value not in allowed:
        raise ConfigError(
            f"--{flag}={value!r} is not allowed; allowed: {', '.join(allowed)}."
        )


def _positive(flag, value, integer=False):
    if value is None:
        return
    if (integer and int(value) != value) or not value > 0 or (
        isinstance(value, float) and not math.isfinite(value)
    ):
        kind = "a positive integer" if integer else "a positive number"
        raise ConfigError(f"--{flag}={value!r} is not allowed; allowed: {kind}.")


def parse_prune_rates(text: str, arch: str) -> tuple:
    """'conv=0.1,dense=0.2,output=0.1' -> sorted pairs, arch defaults for missing groups."""
    rates = dict(ARCH_PRESETS.get(arch, ARCH_PRESETS["fc"])["rates"])
    for item in filter(None, (text or "").split(",")):
        key, _, value = item.partition("=")
        key = key.strip()
        if key not in ("conv", "dense", "output") or not value:
            raise ConfigError(
                f"--prune_rates={text!r} is not allowed; allowed: comma-separated "
                "group=rate with groups conv, dense, output (e.g. conv=0.1,dense=0.2,output=0.1)."
            )
        try:
            rate = float(value)
        except ValueError:
            raise ConfigError(f"--prune_rates: rate {value!r} for {key} is not a number.") from None
        if not 0.0 <= rate < 1.0:
            raise ConfigError(
                f"--prune_rates: {key}={rate} is outside [0, 1); allowed: 0 <= rate < 1."
            )
        rates[key] = rate
    return tuple(sorted(rates.items()))


def make(**values) -> Config:
    """Fills presets for unset values and validates; raises ConfigError naming the flag."""
    from tf_lth import actions, masks

    arch = values.get("arch", "fc")
    experiment = values.get("experiment", "dense")
    _choice("experiment", experiment, EXPERIMENTS)
    _choice("arch", arch, ARCHS)
    dataset = values.get("dataset", "mnist")
    if not dataset or (dataset.startswith("synthetic") and dataset not in SYNTHETIC_DATASETS):
        raise ConfigError(
            f"--dataset={dataset!r} is not allowed; allowed: {', '.join(SYNTHETIC_DATASETS)} "
            "(built in) or a tfds image classification dataset such as mnist or cifar10."
        )
    preset = ARCH_PRESETS[arch]
    if experiment == "learned_supermask":
        for key, value in SUPERMASK_PRESET.items():
            if values.get(key) is None:
                values[key] = value
    if values.get("learning_rate") is None:
        values["learning_rate"] = preset["learning_rate"]
    if values.get("epochs") is None and not values.get("iterations"):
        values["epochs"] = preset["epochs"]
    for key in ("optimizer", "batch_size", "momentum"):
        if values.get(key) is None:
            values.pop(key, None)
    values["prune_rates"] = parse_prune_rates(values.get("prune_rates") or "", arch)
    for key in ("prune_levels", "weight_treatments", "export", "controls"):
        if isinstance(values.get(key), str):
            values[key] = tuple(item for item in values[key].split(",") if item)
    if "prune_levels" in values:
        try:
            values["prune_levels"] = tuple(int(level) for level in values["prune_levels"])
        except ValueError:
            raise ConfigError(
                f"--prune_levels={','.join(map(str, values['prune_levels']))!r} is not allowed; "
                "allowed: comma-separated round counts (integers >= 0)."
            ) from None
    config = Config(**values)

    _choice("optimizer", config.optimizer, OPTIMIZERS)
    _choice("strategy", config.strategy, STRATEGIES)
    _choice("supermask_weights", config.supermask_weights, SUPERMASK_WEIGHTS)
    _choice("mask_sampling", config.mask_sampling, MASK_SAMPLINGS)
    _choice("supermask_export", config.supermask_export, SUPERMASK_EXPORTS)
    _choice("mask_block", config.mask_block, MASK_BLOCKS)
    _choice("prune_scope", config.prune_scope, PRUNE_SCOPES)
    _choice("jit_compile", config.jit_compile, JIT_MODES)
    _choice("mask_one_action", config.mask_one_action, actions.MASK_ONE_ACTIONS)
    _choice("mask_zero_action", config.mask_zero_action, actions.MASK_ZERO_ACTIONS)
    if not config.criteria:
        raise ConfigError(f"--criterion is empty; allowed: {', '.join(masks.CRITERIA)}.")
    for name in config.criteria:
        _choice("criterion", name, masks.CRITERIA)
    if len(config.criteria) > 1 and config.experiment != "untrained_supermask":
        raise ConfigError(
            f"--criterion={config.criterion!r} lists several criteria; allowed: one criterion "
            "(a comma-separated list only with --experiment=untrained_supermask)."
        )
    for item in config.weight_treatments:
        _choice("weight_treatments", item, WEIGHT_TREATMENTS)
    for item in config.export:
        _choice("export", item, EXPORT_FORMATS)
    for item in config.controls:
        _choice("controls", item, CONTROLS)
    if len(set(config.controls)) != len(config.controls):
        raise ConfigError(f"--controls={','.join(config.controls)!r} repeats a control; "
                          f"allowed: each of {', '.join(CONTROLS)} at most once.")
    if config.controls and config.experiment != "lottery":
        raise ConfigError(f"--controls needs --experiment=lottery (got {config.experiment!r}); "
                          "allowed: controls of a lottery run's pruned rounds.")
    _choice("lr_schedule", config.lr_schedule, LR_SCHEDULES)
    if config.experiment != "learned_supermask" and (
            config.mask_sampling == "topk" or config.lr_schedule != "constant"
            or config.weight_decay):
        raise ConfigError(
            "--mask_sampling=topk, --lr_schedule=cosine and --weight_decay need "
            f"--experiment=learned_supermask (got {config.experiment!r}).")
    if not 0.0 < config.keep_fraction <= 1.0:
        raise ConfigError(f"--keep_fraction={config.keep_fraction} is not allowed; "
                          "allowed: 0 < keep_fraction <= 1.")
    if not config.weight_decay >= 0.0:
        raise ConfigError(f"--weight_decay={config.weight_decay} is not allowed; "
                          "allowed: a number >= 0.")
    _positive("batch_size", config.batch_size, integer=True)
    _positive("learning_rate", config.learning_rate)
    _positive("epochs", config.epochs)
    _positive("iterations", config.iterations, integer=True)
    _positive("eval_every", config.eval_every, integer=True)
    _positive("eval_samples", config.eval_samples, integer=True)
    if not 0.0 <= config.momentum < 1.0:
        raise ConfigError(f"--momentum={config.momentum} is not allowed; allowed: 0 <= momentum < 1.")
    if config.rounds < 0:
        raise ConfigError(f"--rounds={config.rounds} is not allowed; allowed: an integer >= 0.")
    if config.rewind_iteration < 0:
        raise ConfigError(
            f"--rewind_iteration={config.rewind_iteration} is not allowed; allowed: an integer >= 0."
        )
    if config.iterations and config.rewind_iteration >= config.iterations:
        raise ConfigError(
            f"--rewind_iteration={config.rewind_iteration} is beyond the training length of "
            f"{config.iterations} iterations; allowed: 0 <= rewind_iteration < --iterations."
        )
    if config.checkpoint_every < 0:
        raise ConfigError(
            f"--checkpoint_every={config.checkpoint_every} is not allowed; allowed: an integer >= 0 "
            "(0: no in-round checkpoints)."
        )
    if any(level < 0 for level in config.prune_levels):
        raise ConfigError(
            f"--prune_levels={config.prune_levels} is not allowed; allowed: round counts >= 0."
        )
    if config.validation_size is not None and config.validation_size < 0:
        raise ConfigError(
            f"--validation_size={config.validation_size} is not allowed; allowed: an integer >= 0."
        )
    if not config.run_dir:
        raise ConfigError("--run_dir is required; allowed: a folder path for this run.")
    if config.resume and config.overwrite:
        raise ConfigError("--resume and --overwrite are exclusive; allowed: at most one of them.")
    return config


# Flags whose change makes a resumed run a different run.
RUN_IDENTITY = (
    "experiment", "dataset", "arch", "epochs", "iterations", "batch_size", "optimizer",
    "learning_rate", "momentum", "seed", "criterion", "rounds", "prune_rates", "one_shot",
    "rewind_iteration", "mask_one_action", "mask_zero_action", "mask_block", "prune_scope",
    "validation_size",
    "supermask_weights", "sigmoid_bias", "constant_multiplier", "mask_sampling",
    "keep_fraction", "lr_schedule", "weight_decay", "controls",
    "dynamic_scaling", "prune_levels", "weight_treatments", "source_run", "eval_every",
)


def to_dict(config: Config) -> dict:
    result = dataclasses.asdict(config)
    result["prune_rates"] = dict(config.prune_rates)
    for key in ("prune_levels", "weight_treatments", "export", "controls"):
        result[key] = list(result[key])
    return result
