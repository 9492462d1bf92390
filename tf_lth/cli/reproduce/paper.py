"""The paper's numbers, the presets it trains, and the budgets a reproduction runs at.

Names come from the core registries: criteria and actions from `tf_lth.core.choices`, learning
rates, epochs and prune rates from `tf_lth.core.config.ARCH_PRESETS`, validation sizes from
`tf_lth.core.data`. Only the paper's own selections (which criteria and actions its figures show)
are named here, and each is checked against its registry.
"""

from __future__ import annotations

import dataclasses

from tf_lth.core import choices, config, data


def _chosen(kind: str, names: tuple, registry: tuple) -> tuple:
    unknown = [name for name in names if name not in registry]
    if unknown:
        raise ValueError(f"{kind} {unknown} are not in the registry ({', '.join(registry)}).")
    return tuple(names)


# The paper's criteria figure (Figure 2), in its legend's order: the 24-round list.
FIGURE_CRITERIA = _chosen("criteria", (
    "large_final", "magnitude_increase", "large_final_same_sign", "movement",
    "large_init_large_final", "large_init", "random", "small_init", "small_final",
), choices.CRITERIA)
# Figure 3: every mask-1 action but `none` (the lottery ticket) and the rescaled variants.
MASK_ONE_ACTIONS = tuple(action for action in choices.MASK_ONE_ACTIONS
                         if action != "none" and not action.endswith("_rescaled"))
# Figure 4: the lottery ticket's `zero` against freezing at init and its two variants.
MASK_ZERO_ACTIONS = _chosen("mask-0 actions", (
    "freeze_init", "freeze_init_zero_mask", "freeze_init_zero_all"), choices.MASK_ZERO_ACTIONS)
PAPER_ROUNDS = 24  # Figure 2 runs to 0.5% remaining; the criteria numbers below are there.
# Training iterations per lottery round at batch 60 (the paper follows Frankle & Carbin 2019:
# fc 50K, conv2 20K, conv4 25K, conv6 30K). `config.ARCH_PRESETS` epochs are these rounded up
# to whole epochs of the training split (tests/test_reproduce.py checks they agree).
PAPER_ITERATIONS = {"fc": 50000, "conv2": 20000, "conv4": 25000, "conv6": 30000}
PAPER_BATCH = 60
# Learned supermasks: the authors' README trains them with --num_epochs 2000 (batch 250).
PAPER_LEARNED_EPOCHS = 2000
SPARSE_SPARSITIES = (0.8, 0.95, 0.98)  # the sparse-training table's final sparsities
# The sparse-training table's methods (not the paper's): method -> (label, experiment flags)
SPARSE_METHODS = {
    "gradual": ("native gradual (tf_lth)", {"experiment": "gradual"}),
    "tfmot": ("tfmot gradual (Keras 2 subprocess)", {"experiment": "tfmot_baseline"}),
    "rigl": ("RigL", {"experiment": "dynamic_sparse", "sparse_method": "rigl"}),
    "set": ("SET", {"experiment": "dynamic_sparse", "sparse_method": "set"}),
    "static": ("static random sparse", {"experiment": "dynamic_sparse",
                                        "sparse_method": "static"}),
}
SEEDS = 3  # seeds of the dense network and the large_final lottery ticket (default, paper)

# ---- the paper's numbers ---------------------------------------------------------------------
PAPER = {
    "mnist_fc": {
        "dense": (97.9, "trained dense fc, test accuracy at the minimum validation loss (repro)"),
        "lottery": {  # weights remaining % -> test accuracy % (repro, large_final, iterative)
            51.3: 98.24, 16.9: 98.37, 7.0: 98.23, 3.6: 98.00, 1.9: 97.57},
        "criteria_24": {  # after 24 rounds, 0.5% remaining (repro)
            "magnitude_increase": 94.4, "large_final_same_sign": 95.0, "movement": 93.4,
            "large_init_large_final": 59.8, "large_init": 45.4, "random": 35.9,
            "small_init": 29.5, "small_final": 11.4},
        "untrained_signed_constant": (86.0, "abstract: large_final_same_sign mask, signed "
                                            "constants, best prune level"),
        "untrained_init": (80.0, "secondary, approx. (repro: 76.3% at 32.9% remaining)"),
        "learned_supermask": (95.3, "secondary (three write-ups)"),
    },
    "cifar10": {
        "untrained_signed_constant": (41.0, "abstract: best of conv2/4/6"),
        "untrained_init": (24.0, "secondary, approx."),
        "learned_supermask": {"conv4": (65.4, "secondary")},
        "learned_dynamic": {"conv2": (66.0, 69.2), "conv4": (72.5, 75.4),
                            "conv6": (76.5, 78.3)},
    },
}
CHANCE = 0.1  # ten classes in MNIST and CIFAR-10


# ---- presets ---------------------------------------------------------------------------------
TFDS_TRAIN_SPLIT = {"mnist": 60000, "cifar10": 50000}  # examples in tfds' train split


@dataclasses.dataclass(frozen=True)
class Preset:
    """One network of the paper on its dataset (hyperparameters: `config.ARCH_PRESETS`)."""

    name: str
    dataset: str
    arch: str

    @property
    def learning_rate(self) -> float:
        return config.ARCH_PRESETS[self.arch]["learning_rate"]

    @property
    def paper_epochs(self) -> int:
        return config.ARCH_PRESETS[self.arch]["epochs"]

    @property
    def prune_rates(self) -> str:
        """The --prune_rates flag: the arch's nonzero rates, e.g. 'dense=0.2,output=0.1'."""
        rates = config.ARCH_PRESETS[self.arch]["rates"]
        return ",".join(f"{group}={rate:g}" for group, rate in rates.items() if rate)

    @property
    def train_size(self) -> int:
        """Training examples once validation is carved from the train split."""
        return TFDS_TRAIN_SPLIT[self.dataset] - data.DEFAULT_VALIDATION_SIZE[self.dataset]


def _preset(arch: str) -> Preset:
    dataset = "mnist" if arch == "fc" else "cifar10"  # as in the paper
    return Preset(f"{dataset}_{arch}", dataset, arch)


PRESETS = {preset.name: preset for preset in map(_preset, config.ARCH_PRESETS)}


# ---- budgets ---------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Budget:
    """How much of the paper's protocol one reproduction runs."""

    name: str
    epochs: float | None          # per lottery round (None: iterations)
    iterations: int | None
    eval_every: int
    criteria: tuple
    criteria_rounds: int
    mask_one_rounds: int
    mask_zero_rounds: int
    block_rounds: int
    export_round: int             # the round whose 1x1 and 1x4 tickets are exported
    untrained_levels: tuple       # () = 0..24
    learned_epochs: float | None
    learned_iterations: int | None
    learned_eval_every: int
    learned_runs: tuple           # (name, extra flags)
    tfmot_levels: tuple
    eval_samples: int = 10
    seeds: int = 1                # runs of the baseline (dense + large_final), seeds s, s+1, ..
    mask_zero_seeds: int = 1      # runs of each mask-0 action, seeds s, s+1, ..
    mask_one_actions: tuple = MASK_ONE_ACTIONS
    mask_zero_actions: tuple = MASK_ZERO_ACTIONS
    sparse_sparsities: tuple = ()  # sparse training beside the ticket (not in the paper)
    sparse_seeds: int = 0

    def __post_init__(self):
        _chosen("criteria", self.criteria, choices.CRITERIA)
        _chosen("mask-1 actions", self.mask_one_actions, choices.MASK_ONE_ACTIONS)
        _chosen("mask-0 actions", self.mask_zero_actions, choices.MASK_ZERO_ACTIONS)

    def epochs_text(self) -> str:
        """Training per lottery round, e.g. '2 epochs' or '40 iterations'."""
        return f"{self.epochs:g} epochs" if self.epochs else f"{self.iterations:,} iterations"

    def learned_text(self) -> str:
        return (f"{self.learned_epochs:g} epochs" if self.learned_epochs
                else f"{self.learned_iterations} iterations")

    def describe(self) -> str:
        return (f"{self.epochs_text()} per round, evaluation every {self.eval_every} "
                f"iterations; criteria to {self.criteria_rounds} rounds, mask-1 actions to "
                f"{self.mask_one_rounds}, mask-0 actions to {self.mask_zero_rounds}, 1x4 blocks "
                f"to {self.block_rounds}; learned supermasks {self.learned_text()}"
                f"; tfmot levels {', '.join(map(str, self.tfmot_levels))}; dense and large_final "
                f"with {self.seeds} seed{'s' if self.seeds > 1 else ''}" +
                (f", each mask-0 action with {self.mask_zero_seeds} seeds"
                 if self.mask_zero_seeds > 1 else "") +
                (f"; sparse training at {', '.join(f'{100 * s:g}%' for s in self.sparse_sparsities)}"
                 f" sparsity with {self.sparse_seeds} seeds" if self.sparse_sparsities else ""))


BUDGETS = ("default", "smoke", "paper")


def budget_from_dict(detail) -> Budget | None:
    """The Budget saved in reproduce.json (lists back to tuples), or None if unreadable."""
    if not isinstance(detail, dict):
        return None
    try:
        values = {key: tuple(tuple(v) if isinstance(v, list) else v for v in value)
                  if isinstance(value, list) else value for key, value in detail.items()}
        return Budget(**values)
    except (TypeError, ValueError):
        return None


LEARNED_RUNS = (("signed_constant", {"supermask_weights": "signed_constant"}),
                ("init", {"supermask_weights": "init"}))
LEARNED_RUNS_CIFAR = (("signed_constant", {"supermask_weights": "signed_constant"}),
                      ("signed_constant_dynamic", {"supermask_weights": "signed_constant",
                                                   "dynamic_scaling": True}))


def budget_for(preset: str, name: str) -> Budget:
    cifar = PRESETS[preset].arch != "fc"
    learned = LEARNED_RUNS_CIFAR if cifar else LEARNED_RUNS
    paper_epochs = PRESETS[preset].paper_epochs
    if name == "smoke":  # every kind of sub-run once or twice; the numbers mean nothing
        return Budget("smoke", None, 40, 20, ("large_final", "magnitude_increase", "random"),
                      3, 2, 3, 2, 2, (0, 3, 6, 12), None, 40, 20, learned[:1], (2,),
                      eval_samples=2, seeds=2, mask_one_actions=("reinit", "signed_reinit"),
                      mask_zero_actions=("freeze_init_zero_all",), sparse_sparsities=(0.9,),
                      sparse_seeds=1)
    if name == "paper":  # the paper's epochs per round, evaluation every 100, 24 rounds
        rounds = PAPER_ROUNDS
        return Budget("paper", paper_epochs, None, 100,
                      FIGURE_CRITERIA, rounds, rounds, rounds, rounds, 12, (),
                      PAPER_LEARNED_EPOCHS, None, 500, learned, (3, 7, 12, 15, 18, 24),
                      seeds=SEEDS, mask_zero_seeds=SEEDS)
    if name != "default":
        raise ValueError(f"--budget={name!r}; allowed: {', '.join(BUDGETS)}.")
    if cifar:  # a GPU budget: a fifth of the paper's epochs, fewer rounds
        epochs = max(1, round(paper_epochs / 5))
        return Budget("default", epochs, None, 500, FIGURE_CRITERIA, 15, 10, 12, 12, 10, (),
                      epochs * 2, None, 500, learned, (3, 7, 10))
    # MNIST fc on 2 CPU cores: as many epochs per round as the plan's estimate fits in
    # DEFAULT_MINUTES with --jobs=DEFAULT_JOBS (at least MIN_EPOCHS).
    return default_fc_budget(learned, DEFAULT_FC_EPOCHS)


DEFAULT_MINUTES = 90
DEFAULT_JOBS = 2
MIN_EPOCHS = 4
# The default fc budget's epochs per round: what `plan.default_epochs()` finds for
# mnist_fc, DEFAULT_JOBS and DEFAULT_MINUTES. Written out because the plan is built from
# this module (imports go plan -> paper only); tests/test_reproduce.py checks they agree,
# so a change to the plan's estimates (plan.SPEEDS) must update it.
DEFAULT_FC_EPOCHS = 7


def default_fc_budget(learned: tuple, epochs: float = MIN_EPOCHS) -> Budget:
    """The default MNIST fc budget at `epochs` per lottery round (the rest is fixed)."""
    return Budget("default", epochs, None, 100, FIGURE_CRITERIA, PAPER_ROUNDS, 12, 15, 15, 12,
                  (), 30, None, 500, learned, (3, 7, 12, 15), seeds=SEEDS,
                  sparse_sparsities=SPARSE_SPARSITIES, sparse_seeds=SEEDS)
