"""The validated, frozen configuration of one run, and the paper's presets per network.

Core layer of tf_lth: the CLI turns flags into a `Config` once; nothing below reads flags.

Every setting is declared once, as a `Config` field made by `setting`: its default, its
help text, its allowed names (from `tf_lth.core.choices`), whether it is part of the run's
identity and whether its default comes from a preset. `tf_lth.cli.flags` defines one absl flag
per field from that declaration and `RUN_IDENTITY` lists the identity fields.

Preset settings (`preset=True`) are declared with the default None, "the preset's value";
`make` resolves them from `SUPERMASK_PRESET` (learned supermasks), then `ARCH_PRESETS`
(the network's), then `BASE_PRESET`, and `preset_text` says the same in words for the
flags' help. A resolved `Config` from `make` never holds None for them (except `epochs`
when `iterations` is given).
"""

from __future__ import annotations

import dataclasses
import math
import typing

from tf_lth.core import choices
# trainers/loop.py, tf_lth/core/distribute.py and tf_lth/core/data.py import these names from here
from tf_lth.core.choices import JIT_MODES, STRATEGIES, SYNTHETIC_DATASETS  # noqa: F401

# docs/semantics.md, Training and Pruning schedule: optimizer, learning rate, batch, epochs per round, prune rates.
ARCH_PRESETS = {
    "fc": dict(learning_rate=1.2e-3, epochs=55, rates={"conv": 0.0, "dense": 0.2, "output": 0.1}),
    "conv2": dict(learning_rate=2e-4, epochs=27, rates={"conv": 0.1, "dense": 0.2, "output": 0.1}),
    "conv4": dict(learning_rate=3e-4, epochs=34, rates={"conv": 0.1, "dense": 0.2, "output": 0.1}),
    "conv6": dict(learning_rate=3e-4, epochs=40, rates={"conv": 0.15, "dense": 0.2, "output": 0.1}),
}
# docs/semantics.md, Supermasks: the learned-supermask preset.
SUPERMASK_PRESET = dict(optimizer="sgd", learning_rate=100.0, momentum=0.9, batch_size=250)
# Every other run (docs/semantics.md, Training).
BASE_PRESET = dict(optimizer="adam", momentum=0.9, batch_size=60)
PRUNE_GROUPS = ("conv", "dense", "output")


class ConfigError(ValueError):
    """A flag value that is not allowed; the message names the flag."""


def setting(default, help_text: str, *, allowed: tuple = (), identity: bool = False,
            preset: bool = False, listed: bool = False, flagfile: bool = True):
    """One `Config` field, declared once; `tf_lth.cli.flags` makes its flag from this.

    default: the value when the flag is not given (None with `preset`: the preset's).
    help_text: the flag's help text; `tf_lth.cli.flags` adds the allowed names and the preset.
    allowed: the names the setting accepts (a `tf_lth.core.choices` tuple); for a tuple setting
        or a `listed` one (a comma-separated string), each item's.
    identity: a change makes a resumed run a different run (`RUN_IDENTITY`).
    preset: the default depends on the experiment or the network (`preset_value`).
    flagfile: written into the run's flags.txt (not so for how a run is started).
    """
    metadata = dict(help=help_text, choices=tuple(allowed), identity=identity, preset=preset,
                    listed=listed, flagfile=flagfile)
    return dataclasses.field(default=default, metadata=metadata)


def _datasets_help() -> str:
    built_in = " / ".join(SYNTHETIC_DATASETS)
    return ("A tfds image classification dataset (mnist, fashion_mnist, cifar10, ...), or "
            f"{built_in} (built in).")


@dataclasses.dataclass(frozen=True)
class Config:
    """Every setting of one run, typed and checked (the flag names; see `setting`)."""

    experiment: str = setting("dense", "What the run trains (docs/semantics.md).",
                              allowed=choices.EXPERIMENTS, identity=True)
    dataset: str = setting("mnist", _datasets_help(), identity=True)
    data_dir: str | None = setting(None, "Where tfds data is prepared (default: TFDS_DATA_DIR "
                                   "or ~/tensorflow_datasets).")
    validation_size: int | None = setting(None, "Validation examples carved from the end of "
                                          "train (default 5000).", identity=True)
    arch: str = setting("fc", "The network (docs/semantics.md, Networks).",
                        allowed=choices.ARCHS, identity=True)
    epochs: float | None = setting(None, "Epochs per round.", identity=True, preset=True)
    iterations: int | None = setting(None, "Iterations per round; overrides --epochs.",
                                     identity=True)
    batch_size: int | None = setting(None, "Training batch size.", identity=True, preset=True)
    optimizer: str | None = setting(None, "The optimizer.", allowed=choices.OPTIMIZERS,
                                    identity=True, preset=True)
    learning_rate: float | None = setting(None, "Learning rate.", identity=True, preset=True)
    momentum: float | None = setting(None, "Momentum for sgd.", identity=True, preset=True)
    eval_every: int = setting(100, "Iterations between evaluations (and at the end).",
                              identity=True)
    seed: int = setting(0, "Seed of initialisation, data order and masks.", identity=True)
    deterministic: bool = setting(False, "TensorFlow op determinism: bitwise repeatable.")
    run_dir: str | None = setting(None, "The run directory (required).")
    resume: bool = setting(False, "Continue the run in --run_dir.", flagfile=False)
    overwrite: bool = setting(False, "Replace the run in --run_dir.", flagfile=False)
    criterion: str = setting("large_final", "Mask criterion (docs/semantics.md, Mask "
                             "criteria); a comma-separated list for untrained_supermask.",
                             allowed=choices.CRITERIA, identity=True, listed=True)
    rounds: int = setting(0, "Pruning rounds after the dense round 0.", identity=True)
    prune_rates: tuple = setting((), "Per-group rates, e.g. conv=0.1,dense=0.2,output=0.1; "
                                 "groups not given keep the arch's.", identity=True,
                                 preset=True)
    one_shot: bool = setting(False, "Prune straight to the level of --rounds.", identity=True)
    rewind_iteration: int = setting(0, "Reset to the weights of this iteration of round 0 "
                                    "(late resetting); 0 resets to the initial weights.",
                                    identity=True)
    mask_one_action: str = setting("none", "Starting values of kept weights "
                                   "(docs/semantics.md, Mask-1 actions).",
                                   allowed=choices.MASK_ONE_ACTIONS, identity=True)
    mask_zero_action: str = setting("zero", "Values of pruned weights (docs/semantics.md, "
                                    "Mask-0 actions).", allowed=choices.MASK_ZERO_ACTIONS,
                                    identity=True)
    mask_block: str = setting("1x1", "Mask granularity: 1x1 (the paper) or 1x4 (LiteRT's "
                              "sparse kernel blocks).", allowed=choices.MASK_BLOCKS,
                              identity=True)
    prune_scope: str = setting("layer", "layer: each layer prunes its own rate (the paper); "
                               "global: one ranking across layers, pruning the same total "
                               "per round.", allowed=choices.PRUNE_SCOPES, identity=True)
    source_run: str | None = setting(None, "A finished dense run whose weights untrained "
                                     "supermasks use.", identity=True)
    prune_levels: tuple = setting((), "Untrained supermask prune levels, as round counts "
                                  "(default 0..24).", identity=True)
    weight_treatments: tuple = setting(choices.WEIGHT_TREATMENTS, "Untrained supermask weight "
                                       "treatments.", allowed=choices.WEIGHT_TREATMENTS,
                                       identity=True)
    supermask_weights: str = setting("init", "Learned supermask kernels.",
                                     allowed=choices.SUPERMASK_WEIGHTS, identity=True)
    sigmoid_bias: float = setting(0.0, "Initial mask logit (0 means p = 0.5).", identity=True)
    constant_multiplier: float = setting(1.0, "Multiplier of the signed constant.",
                                         identity=True)
    mask_sampling: str = setting("bernoulli", "Learned supermask masks: bernoulli, round (the "
                                 "paper's variant) or topk (edge-popup: the top "
                                 "--keep_fraction of |score| per layer).",
                                 allowed=choices.MASK_SAMPLINGS, identity=True)
    keep_fraction: float = setting(0.5, "Fraction of weights (or blocks) per layer that "
                                   "--mask_sampling=topk keeps.", identity=True)
    lr_schedule: str = setting("constant", "constant or cosine (decay to 0 over the round).",
                               allowed=choices.LR_SCHEDULES, identity=True)
    weight_decay: float = setting(0.0, "Decoupled weight decay of the optimizer (0: none).",
                                  identity=True)
    controls: tuple = setting((), "Lottery controls trained at every pruned round, a comma "
                              "list: random (random mask, same per-layer counts) and reinit "
                              "(the ticket's mask, fresh initialisation).",
                              allowed=choices.CONTROLS, identity=True)
    dynamic_scaling: bool = setting(False, "Rescale kernels by size / kept every step.",
                                    identity=True)
    initial_sparsity: float = setting(0.0, "--experiment=gradual: the sparsity at --begin_step "
                                      "(tfmot's PolynomialDecay).", identity=True)
    final_sparsity: float | None = setting(None, "--experiment=gradual: the sparsity reached "
                                           "at --end_step; --experiment=dynamic_sparse (and "
                                           "tfmot_baseline, one uniform target instead of the "
                                           "lottery levels): the target held from the first "
                                           "step. In [0, 1).", identity=True)
    begin_step: int | None = setting(None, "--experiment=gradual: the first pruning step (step 1 "
                                     "is the first batch); default 10% of the round, a "
                                     "multiple of --pruning_frequency.", identity=True)
    end_step: int | None = setting(None, "--experiment=gradual: the last pruning step; default "
                                   "60% of the round, a pruning step.", identity=True)
    pruning_frequency: int = setting(100, "--experiment=gradual: steps between pruning steps.",
                                     identity=True)
    pruning_power: float = setting(3.0, "--experiment=gradual: PolynomialDecay's exponent.",
                                   identity=True)
    sparse_method: str = setting("rigl", "--experiment=dynamic_sparse: how connections move "
                                 "(rigl: grow by the dense gradient; set: grow at random; "
                                 "static: a fixed random mask).",
                                 allowed=choices.SPARSE_METHODS, identity=True)
    sparsity_distribution: str = setting("erk", "--experiment=dynamic_sparse: per-layer "
                                         "densities (erk: Erdos-Renyi-Kernel; uniform).",
                                         allowed=choices.SPARSITY_DISTRIBUTIONS, identity=True)
    update_every: int = setting(100, "--experiment=dynamic_sparse: steps between mask updates "
                                "(0: static).", identity=True)
    drop_fraction: float = setting(0.3, "--experiment=dynamic_sparse: fraction of active "
                                   "weights moved at the first update (cosine decay to 0).",
                                   identity=True)
    update_end_step: int | None = setting(None, "--experiment=dynamic_sparse: the last step "
                                          "that moves connections; default 75% of the round.",
                                          identity=True)
    eval_samples: int = setting(10, "Sampled masks averaged at evaluation.")
    supermask_export: str = setting("expected", "Mask a learned supermask exports.",
                                    allowed=choices.SUPERMASK_EXPORTS)
    strategy: str = setting("default", "Distribution strategy.", allowed=choices.STRATEGIES)
    export: tuple = setting((), "Formats exported at the end.", allowed=choices.EXPORT_FORMATS)
    checkpoint_every: int = setting(0, "Iterations between in-round checkpoints (0: none).")
    jit_compile: str = setting("auto", "XLA for the training and evaluation calls: auto (XLA, "
                               "else the plain graph, said once in the log), on or off.",
                               allowed=choices.JIT_MODES)
    download: bool = setting(True, "Let tfds download a missing dataset.")
    progress: bool = setting(True, "Show a progress bar on a terminal.")

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


def settings() -> tuple:
    """The `Config` fields (`dataclasses.Field`), in declaration order: one per flag."""
    return dataclasses.fields(Config)


_TYPE_HINTS = typing.get_type_hints(Config)


def value_type(field: dataclasses.Field) -> type:
    """str, int, float, bool or tuple: a field's type, without its `| None`."""
    hint = _TYPE_HINTS[field.name]
    kinds = [kind for kind in typing.get_args(hint) if kind is not type(None)]
    return kinds[0] if kinds else hint


def default(name: str):
    """The declared default of setting `name` (None for a preset: `preset_value`)."""
    return Config.__dataclass_fields__[name].default


# Flags whose change makes a resumed run a different run.
RUN_IDENTITY = tuple(field.name for field in settings() if field.metadata["identity"])
_TUPLE_SETTINGS = tuple(field.name for field in settings() if value_type(field) is tuple)


def preset_value(name: str, experiment: str, arch: str):
    """The value preset setting `name` takes when not given (docs/semantics.md, Training)."""
    if experiment == "learned_supermask" and name in SUPERMASK_PRESET:
        return SUPERMASK_PRESET[name]
    if name in ARCH_PRESETS[arch]:
        return ARCH_PRESETS[arch][name]
    return BASE_PRESET[name]


def preset_text(name: str) -> str:
    """`preset_value` in words, e.g. '60; 250 for learned supermasks' (the flags' help)."""
    if name == "prune_rates":
        return "the arch's: " + ", ".join(
            f"{arch} " + " ".join(f"{group}={rate}" for group, rate in preset["rates"].items())
            for arch, preset in ARCH_PRESETS.items())
    if name in ARCH_PRESETS["fc"]:
        text = "the arch's: " + ", ".join(f"{arch} {preset[name]}"
                                          for arch, preset in ARCH_PRESETS.items())
    else:
        text = str(BASE_PRESET[name])
    if name in SUPERMASK_PRESET and SUPERMASK_PRESET[name] != BASE_PRESET.get(name):
        text += f"; {SUPERMASK_PRESET[name]} for learned supermasks"
    return text


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
        if key not in PRUNE_GROUPS or not value:
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
    config = Config(**_resolve(values))
    _check_choices(config)
    _check_combinations(config)
    _check_numbers(config)
    _check_sparse_training(config)
    _check_run_dir(config)
    return config


def _check_run_kind(experiment: str, arch: str, dataset: str) -> None:
    """What the presets are looked up by; checked before they are."""
    _choice("experiment", experiment, choices.EXPERIMENTS)
    _choice("arch", arch, choices.ARCHS)
    if not dataset or (dataset.startswith("synthetic") and dataset not in SYNTHETIC_DATASETS):
        raise ConfigError(
            f"--dataset={dataset!r} is not allowed; allowed: {', '.join(SYNTHETIC_DATASETS)} "
            "(built in) or a tfds image classification dataset such as mnist or cifar10."
        )


def _resolve(values: dict) -> dict:
    """`values` with the presets filled in and the comma lists split into tuples."""
    values = dict(values)
    experiment = values.get("experiment", default("experiment"))
    arch = values.get("arch", default("arch"))
    _check_run_kind(experiment, arch, values.get("dataset", default("dataset")))
    for field in settings():
        if not field.metadata["preset"] or field.name == "prune_rates":
            continue
        if values.get(field.name) is None and not (field.name == "epochs"
                                                   and values.get("iterations")):
            values[field.name] = preset_value(field.name, experiment, arch)
    values["prune_rates"] = parse_prune_rates(values.get("prune_rates") or "", arch)
    for key in _TUPLE_SETTINGS:
        if isinstance(values.get(key), str):  # a flag's comma-separated list
            values[key] = tuple(item for item in values[key].split(",") if item)
        elif isinstance(values.get(key), list):  # as config.json stores it
            values[key] = tuple(values[key])
    if "prune_levels" in values:
        try:
            values["prune_levels"] = tuple(int(level) for level in values["prune_levels"])
        except ValueError:
            raise ConfigError(
                f"--prune_levels={','.join(map(str, values['prune_levels']))!r} is not allowed; "
                "allowed: comma-separated round counts (integers >= 0)."
            ) from None
    return values


def _check_choices(config: Config) -> None:
    """Every setting declared with allowed names holds one (each item, for lists)."""
    for field in settings():
        allowed = field.metadata["choices"]
        value = getattr(config, field.name)
        if not allowed or value is None:
            continue
        if field.metadata["listed"]:
            value = tuple(item for item in value.split(",") if item)
        for item in value if isinstance(value, tuple) else (value,):
            _choice(field.name, item, allowed)


def _check_combinations(config: Config) -> None:
    """Settings that are allowed alone but not together."""
    if not config.criteria:
        raise ConfigError(f"--criterion is empty; allowed: {', '.join(choices.CRITERIA)}.")
    if len(config.criteria) > 1 and config.experiment != "untrained_supermask":
        raise ConfigError(
            f"--criterion={config.criterion!r} lists several criteria; allowed: one criterion "
            "(a comma-separated list only with --experiment=untrained_supermask)."
        )
    if len(set(config.controls)) != len(config.controls):
        raise ConfigError(f"--controls={','.join(config.controls)!r} repeats a control; "
                          f"allowed: each of {', '.join(choices.CONTROLS)} at most once.")
    if config.controls and config.experiment != "lottery":
        raise ConfigError(f"--controls needs --experiment=lottery (got {config.experiment!r}); "
                          "allowed: controls of a lottery run's pruned rounds.")
    if config.experiment != "learned_supermask" and (
            config.mask_sampling == "topk" or config.lr_schedule != "constant"
            or config.weight_decay):
        raise ConfigError(
            "--mask_sampling=topk, --lr_schedule=cosine and --weight_decay need "
            f"--experiment=learned_supermask (got {config.experiment!r}).")
    if config.iterations and config.rewind_iteration >= config.iterations:
        raise ConfigError(
            f"--rewind_iteration={config.rewind_iteration} is beyond the training length of "
            f"{config.iterations} iterations; allowed: 0 <= rewind_iteration < --iterations."
        )


def _at_least_zero(flag: str, value, what: str = "an integer >= 0") -> None:
    if value is not None and value < 0:
        raise ConfigError(f"--{flag}={value} is not allowed; allowed: {what}.")


def _check_numbers(config: Config) -> None:
    """Each number setting within its range."""
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
    _at_least_zero("rounds", config.rounds)
    _at_least_zero("rewind_iteration", config.rewind_iteration)
    _at_least_zero("checkpoint_every", config.checkpoint_every,
                   "an integer >= 0 (0: no in-round checkpoints)")
    if any(level < 0 for level in config.prune_levels):
        raise ConfigError(
            f"--prune_levels={config.prune_levels} is not allowed; allowed: round counts >= 0."
        )
    _at_least_zero("validation_size", config.validation_size)


_GRADUAL_SETTINGS = ("initial_sparsity", "begin_step", "end_step", "pruning_frequency",
                     "pruning_power")
_DYNAMIC_SETTINGS = ("sparse_method", "sparsity_distribution", "update_every", "drop_fraction",
                     "update_end_step")


def _in_unit_interval(flag: str, value) -> None:
    if value is not None and not (math.isfinite(value) and 0.0 <= value < 1.0):
        raise ConfigError(f"--{flag}={value} is not allowed; allowed: 0 <= {flag} < 1.")


def _check_sparse_training(config: Config) -> None:
    """The gradual-pruning and dynamic-sparse settings (docs/sparse_training.md): each in its
    range, and only with the experiment that reads it."""
    experiment = config.experiment
    for names, owners in ((_GRADUAL_SETTINGS, ("gradual", "tfmot_baseline")),
                          (_DYNAMIC_SETTINGS, ("dynamic_sparse",))):
        for name in names:
            if experiment not in owners and getattr(config, name) != default(name):
                raise ConfigError(f"--{name} needs --experiment={' or '.join(owners)} (got "
                                  f"{experiment!r}).")
    if experiment == "tfmot_baseline" and config.final_sparsity is None:
        for name in _GRADUAL_SETTINGS:
            if getattr(config, name) != default(name):
                raise ConfigError(f"--{name} with --experiment=tfmot_baseline needs "
                                  "--final_sparsity (one uniform gradual schedule).")
    if config.final_sparsity is not None and experiment not in choices.SPARSE_EXPERIMENTS + (
            "tfmot_baseline",):
        raise ConfigError(f"--final_sparsity needs --experiment=gradual, dynamic_sparse or "
                          f"tfmot_baseline (got {experiment!r}).")
    _in_unit_interval("final_sparsity", config.final_sparsity)
    _in_unit_interval("initial_sparsity", config.initial_sparsity)
    uniform_tfmot = config.final_sparsity is not None and experiment == "tfmot_baseline"
    if experiment == "gradual" or uniform_tfmot:
        _check_gradual_steps(config)
    if uniform_tfmot:
        _check_uniform_tfmot(config)
    if experiment not in choices.SPARSE_EXPERIMENTS:
        return
    if config.final_sparsity is None:
        raise ConfigError(f"--final_sparsity is required with --experiment={experiment}; "
                          "allowed: a number in [0, 1).")
    for name in ("rounds", "one_shot", "rewind_iteration", "mask_one_action",
                 "mask_zero_action", "strategy"):
        if getattr(config, name) != default(name):
            raise ConfigError(f"--{name}={getattr(config, name)!r} is not allowed with "
                              f"--experiment={experiment} (one round whose masks change while "
                              f"training); allowed: the default, {default(name)!r}.")
    if experiment == "gradual":
        return
    for name in ("mask_block", "prune_scope"):
        if getattr(config, name) != default(name):
            raise ConfigError(f"--{name}={getattr(config, name)!r} is not allowed with "
                              "--experiment=dynamic_sparse (single weights, per-layer densities "
                              "from --sparsity_distribution); allowed: the default, "
                              f"{default(name)!r}.")
    _at_least_zero("update_every", config.update_every, "an integer >= 0 (0: static)")
    if not (math.isfinite(config.drop_fraction) and 0.0 < config.drop_fraction <= 1.0):
        raise ConfigError(f"--drop_fraction={config.drop_fraction} is not allowed; allowed: "
                          "0 < drop_fraction <= 1.")
    _positive("update_end_step", config.update_end_step, integer=True)


def _check_uniform_tfmot(config: Config) -> None:
    """The tfmot baseline with --final_sparsity: one run, every layer pruned on its own,
    single weights; the lottery levels' settings, global scope and 1x4 blocks are refused."""
    for name in ("rounds", "one_shot", "prune_scope", "mask_block"):
        if getattr(config, name) != default(name):
            raise ConfigError(
                f"--{name}={getattr(config, name)!r} is not allowed with "
                "--experiment=tfmot_baseline and --final_sparsity (one run, every layer "
                f"pruned on its own, single weights); allowed: the default, {default(name)!r}.")
    if config.iterations:  # else the round's length needs the data (the worker checks)
        gradual_window(config, int(config.iterations))


def _check_gradual_steps(config: Config) -> None:
    _at_least_zero("begin_step", config.begin_step)
    _positive("pruning_frequency", config.pruning_frequency, integer=True)
    _positive("pruning_power", config.pruning_power)
    if config.end_step is not None and config.end_step <= (config.begin_step or 0):
        raise ConfigError(f"--end_step={config.end_step} is not after --begin_step="
                          f"{config.begin_step or 0}; allowed: begin_step < end_step.")


def gradual_window(config: Config, iterations: int) -> tuple:
    """(begin_step, end_step, frequency) of --experiment=gradual for a round of `iterations`:
    the flags where given, else pruning from 10% to 60% of the round in whole pruning
    periods (`tf_lth.core.sparsity.pruning_window`, as the tfmot baseline). A default
    end_step is always a pruning step inside the round (the last one of the default span),
    so the schedule reaches --final_sparsity; a round with no pruning step after the first
    is refused."""
    from tf_lth.core.sparsity import pruning_window

    frequency = int(config.pruning_frequency)
    default_begin, default_end, _ = pruning_window(iterations, frequency, clamp=False)
    begin = default_begin if config.begin_step is None else int(config.begin_step)
    if config.end_step is not None:
        end = int(config.end_step)
        if end > iterations:
            raise ConfigError(f"--end_step={end} is beyond the round's {iterations} iterations; "
                              f"allowed: begin_step <= end_step <= {iterations}.")
        if begin >= end:
            first = (f"--begin_step={begin}" if config.begin_step is not None else
                     f"the default --begin_step ({begin}, 10% of the round's {iterations} "
                     "iterations in whole pruning periods)")
            raise ConfigError(f"--end_step={end} is not after {first}; allowed: "
                              "begin_step < end_step.")
        if (begin if begin >= 1 else frequency) > end:  # step 1 is the first batch
            raise ConfigError(f"--pruning_frequency={frequency} leaves no pruning step from "
                              f"step {begin} to --end_step={end}; allowed: --pruning_frequency "
                              f"<= {end - begin}.")
        return begin, end, frequency
    if begin >= iterations:
        raise ConfigError(f"--begin_step={begin} is not before the end of the round "
                          f"({iterations} iterations); allowed: begin_step < {iterations}.")
    # the default span from begin, cut back to the last pruning step inside the round
    # (min(...) alone could end between two pruning steps: the final sparsity never reached)
    wanted = min(iterations, begin + (default_end - default_begin))
    end = begin + frequency * ((wanted - begin) // frequency)
    if end <= begin:
        raise ConfigError(
            f"--pruning_frequency={frequency} leaves no pruning step after step {begin} in the "
            f"round's {iterations} iterations, so --final_sparsity would never be reached; "
            f"allowed: --pruning_frequency <= {iterations - begin}"
            + ("." if config.begin_step is None else ", or an earlier --begin_step."))
    return begin, end, frequency


def _check_run_dir(config: Config) -> None:
    if not config.run_dir:
        raise ConfigError("--run_dir is required; allowed: a folder path for this run.")
    if config.resume and config.overwrite:
        raise ConfigError("--resume and --overwrite are exclusive; allowed: at most one of them.")


def to_dict(config: Config) -> dict:
    result = dataclasses.asdict(config)
    result["prune_rates"] = dict(config.prune_rates)
    for key in _TUPLE_SETTINGS:
        if key != "prune_rates":
            result[key] = list(result[key])
    return result
