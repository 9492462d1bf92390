"""Dense training and lottery-ticket rounds (docs/semantics.md, "One round engine").

Experiment layer of tf_lth. `LotteryRun.run()` reads as a table of contents, and a round
flows one way: its inputs are loaded once from the previous round's files
(`RoundInputs`); the round engine (`tf_lth.core.rounds.next_round`) gives the masks and
starting values, assigned to the model; the shared loop trains it (`RoundTrainer`); the
controls train (`ControlRuns`); then the round's files are written (`RoundFiles`), DONE
last. Every round is idempotent: a round with a DONE marker is skipped, so `--resume` is
running again.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from tf_lth.core import masks, run_files
from tf_lth.core.config import ConfigError
from tf_lth.core import rounds as engine
from tf_lth.core.models import check_compatible, layer_group, model_state, set_model_state
from tf_lth.core.ticket import assign_round, get_frozen, get_masks, kernel_gradients
from tf_lth.core.wrap import kernel_slots
from trainers import runs
from trainers.loop import RoundHooks, Schedule, Trainer, mask_summary

GRADIENT_EXAMPLES = 1000  # training examples the gradient criteria (snip, grad) use


def cross_entropy(labels, logits):
    """Per-example softmax cross-entropy of logits: the loss every CLI run trains on."""
    return keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)


def train_gradients(model, data, kernel_masks: dict | None = None) -> dict:
    """`tf_lth.core.ticket.kernel_gradients` on the first GRADIENT_EXAMPLES training examples."""
    batch = (tf.constant(data.train_images[:GRADIENT_EXAMPLES]),
             tf.constant(data.train_labels[:GRADIENT_EXAMPLES]))
    return kernel_gradients(model, batch, loss=cross_entropy, kernel_masks=kernel_masks)


@dataclasses.dataclass(frozen=True)
class RoundInputs:
    """What a pruned round is computed from, loaded once: the weights rounds reset to, the
    previous round's final weights, and the engine's arrays (previous masks and frozen
    values, w_i and w_f per kernel key, gradients for snip and grad)."""

    round_index: int
    reset_state: dict
    final_state: dict
    arrays: engine.RoundArrays


@dataclasses.dataclass(frozen=True)
class TrainedRound:
    """A round just trained: its files (not finished yet), its record, and the state it
    started from (its initial.npz; read from there when the round was resumed)."""

    files: RoundFiles
    record: dict
    fresh_start_state: dict | None

    @property
    def start_state(self) -> dict:
        if self.fresh_start_state is not None:
            return self.fresh_start_state
        return run_files.load_arrays(os.path.join(self.files.folder, "initial.npz"))


class RoundTrainer:
    """Trains one round of a run's model through the shared loop; shared by dense,
    lottery and learned-supermask runs (by composition).

    It owns the Trainer, the TensorBoard writer and the round's Schedule, and gives back
    the round's record and its `RoundFiles`; what happens between rounds is the run's.
    """

    def __init__(self, config, data, model, strategy, log=print, mask_updater=None):
        self.config, self.data, self.model, self.log = config, data, model, log
        self.iterations = config.train_iterations(data.steps_per_epoch(config.batch_size))
        self.mask_updater = mask_updater  # masks that change while training (gradual, RigL)
        self.trainer = Trainer(
            model, config.optimizer, config.learning_rate, config.momentum,
            strategy=strategy, jit_compile=config.jit_compile, log=log,
            weight_decay=config.weight_decay,
            cosine_steps=self.iterations if config.lr_schedule == "cosine" else 0,
            mask_updater=mask_updater)
        check_compatible(config, data)  # also --rewind_iteration against the length
        self.tb_writer = tf.summary.create_file_writer(os.path.join(config.run_dir, "tb"))
        self.initial_state = model_state(model)

    def schedule(self, round_index: int, control: str | None = None) -> Schedule:
        """The round's Schedule; a control's has the same budget and data order but no
        checkpoints or rewind snapshots."""
        config = self.config
        return Schedule(
            iterations=self.iterations, batch_size=config.batch_size,
            seed=config.seed * 1000 + round_index, eval_every=config.eval_every,
            checkpoint_every=0 if control else config.checkpoint_every,
            snapshot_at=(config.rewind_iteration,) if round_index == 0 and not control
            and config.rewind_iteration > 0 else (),
            round_index=round_index,
            label=f"round {round_index}" + (f" {control} control" if control else ""),
            progress=config.progress,
            mask_update_at=tuple(self.mask_updater.update_steps(self.iterations))
            if self.mask_updater is not None and not control else ())

    def train(self, round_index: int, prune_level: int) -> TrainedRound:
        """Trains the model as it is (or resumes the round's checkpoint); the round's
        record and files, not yet finished."""
        config = self.config
        files = RoundFiles(config.run_dir, round_index, self.tb_writer,
                           self.trainer.checkpoint, lambda: model_state(self.model),
                           self.iterations, kept_counts=self.mask_updater.kept_counts
                           if self.mask_updater is not None else None,
                           kernel_sizes=self.mask_updater.kernel_sizes
                           if self.mask_updater is not None else None)
        start_iteration, history = files.recover()
        if start_iteration:
            self.log(f"round {round_index}: resuming at iteration {start_iteration}")
            start_state = None
        else:
            if round_index == 0:
                set_model_state(self.model, self.initial_state)
            self.trainer.reset_optimizer()
            start_state = model_state(self.model)
            files.start(start_state)
        self.trainer.set_learning_rate(config.learning_rate)
        weights_remaining, layer_fractions = mask_summary(self.model)
        self.log(f"round {round_index}: {100 * weights_remaining:.2f}% of weights remaining, "
                 f"{self.iterations} iterations")
        metrics = self.trainer.fit(self.data, self.schedule(round_index), files,
                                   start_iteration, history)
        if self.mask_updater is not None:  # the masks moved: what the round ends with
            self.mask_updater.zero_pruned()
            weights_remaining, layer_fractions = mask_summary(self.model)
        self.tb_writer.flush()
        history = metrics.pop("history")
        record = {
            "round": round_index,
            "prune_level": prune_level,
            "criterion": _criterion_label(config, round_index),
            "mask_one_action": config.mask_one_action,
            "mask_zero_action": config.mask_zero_action,
            "mask_block": config.mask_block,
            "weights_remaining": weights_remaining,
            "layers": layer_fractions,
            **metrics,
            "evaluations": len(history),
        }
        return TrainedRound(files, record, start_state)

    def train_control(self, kind: str, round_index: int) -> dict:
        """Trains the model as it is on the round's budget and data order; its metrics."""
        self.trainer.reset_optimizer()
        self.trainer.set_learning_rate(self.config.learning_rate)
        weights_remaining, layer_fractions = mask_summary(self.model)
        metrics = self.trainer.fit(self.data, self.schedule(round_index, control=kind))
        metrics.pop("history")
        return {"weights_remaining": weights_remaining, "layers": layer_fractions, **metrics}

    def round_arrays(self) -> dict:
        """The round's final files: {file name: arrays} (weights, masks, frozen values)."""
        return {"final.npz": model_state(self.model), "masks.npz": get_masks(self.model),
                "frozen.npz": get_frozen(self.model)}

    def log_result(self, record: dict) -> None:
        best = record["best"]
        self.log(f"round {record['round']}: test accuracy {100 * record['test_accuracy']:.2f}% "
                 f"(at best validation loss: {100 * best['test_accuracy']:.2f}%, iteration "
                 f"{best['iteration']}), {record['examples_per_second']:.0f} examples/s")


def _criterion_label(config, round_index: int) -> str:
    """What chose the round's mask: the criterion, "dense", or the sparse-training method."""
    if config.experiment == "gradual":
        return "gradual_magnitude"
    if config.experiment == "dynamic_sparse":
        return config.sparse_method
    return config.criterion if round_index else "dense"


VARIANT_2_MARKER = "variant2_rule.json"


class LotteryRun:
    """Iterative (or one-shot) pruning with rewinding; `--rounds=0` is dense training.

    Kernels are keyed by `tf_lth.core.wrap.kernel_slots` (the layer name for one-kernel
    layers), so every kernel kind the Python API masks is pruned here too.
    """

    def __init__(self, config, data, model_factory, strategy, log=print):
        self.config, self.data, self.strategy, self.log = config, data, strategy, log
        with strategy.scope():
            self.model = model_factory()
        self.rounds = RoundTrainer(config, data, self.model, strategy, log)
        self.trainer = self.rounds.trainer
        self.iterations = self.rounds.iterations
        self.rates = {slot.key: config.rates[layer_group(self.model, slot.layer)]
                      for slot in kernel_slots(self.model)}

    @property
    def pruned_rounds(self) -> list:
        if self.config.experiment == "dense" or self.config.rounds == 0:
            return []
        return [1] if self.config.one_shot else list(range(1, self.config.rounds + 1))

    def run(self) -> list:
        """Runs every round not yet done; returns the round records."""
        self.log(f"run directory: {self.config.run_dir}")
        runs.round_records(self.config.run_dir)  # a corrupt record stops us before training
        self._check_variant_2_rule()
        for round_index in [0] + self.pruned_rounds:
            if run_files.is_done(self.config.run_dir, round_index):
                self.log(f"round {round_index}: already complete, skipped")
                continue
            self.run_round(round_index)
            self._write_results()
        return self._write_results()

    def _check_variant_2_rule(self) -> None:
        """Refuses to go on with a variant 2 run whose rounds after round 1 were made by an
        older tf_lth, which compared each round's final weights with the first `w_i`
        instead of the round's own start (`tf_lth.core.rounds.w_init_is_previous_start`):
        its later rounds would follow another rule. Marks new variant 2 runs."""
        config = self.config
        if config.mask_zero_action != "freeze_init_zero_all" or config.one_shot:
            return
        marker = os.path.join(config.run_dir, VARIANT_2_MARKER)
        if os.path.exists(marker):
            return
        later = [index for index in self.pruned_rounds if index > 1 and os.path.isdir(
            run_files.round_dir(config.run_dir, index))]
        if later:
            raise ConfigError(
                f"--run_dir={config.run_dir}: this variant 2 run "
                f"(--mask_zero_action=freeze_init_zero_all) reached round {max(later)} with "
                "an older tf_lth, which compared each round's final weights with the first "
                "round's w_i; rounds 2 on now compare them with the round's own start, as the "
                "paper's code does (docs/semantics.md). Allowed: a new --run_dir, or "
                "--overwrite to train it again.")
        run_files.write_json(marker, {"w_init": "previous round's start from round 2 on"})

    def run_round(self, round_index: int) -> None:
        """One round, one way: inputs, the engine, training, the controls, the files."""
        inputs = self.round_inputs(round_index) if round_index > 0 else None
        if inputs is not None:
            self.prune(inputs)
        trained = self.rounds.train(round_index, self.prune_level(round_index))
        if inputs is not None and self.config.controls:
            ControlRuns(self.rounds, self.config).train(inputs, trained.start_state,
                                                        trained.record)
        trained.files.finish(trained.record, self.rounds.round_arrays())
        self.rounds.log_result(trained.record)

    def _write_results(self) -> list:
        records = runs.round_records(self.config.run_dir)
        runs.write_results(self.config.run_dir, self.config, records,
                           extra=controls_summary(records))
        return records

    # ---- between rounds ------------------------------------------------------------
    def prune_level(self, round_index: int) -> int:
        if round_index == 0:
            return 0
        return self.config.rounds if self.config.one_shot else round_index

    def reset_state(self) -> dict:
        """The weights rounds reset to: initial, or those of --rewind_iteration."""
        folder = run_files.round_dir(self.config.run_dir, 0)
        name = "rewind.npz" if self.config.rewind_iteration > 0 else "initial.npz"
        return run_files.load_arrays(os.path.join(folder, name))

    def round_inputs(self, round_index: int) -> RoundInputs:
        """Round `round_index`'s inputs, read once from the previous round's files."""
        config = self.config
        previous = run_files.round_dir(config.run_dir, 0 if config.one_shot else round_index - 1)
        final_state = run_files.load_arrays(os.path.join(previous, "final.npz"))
        previous_masks = _by_kernel(self.model, os.path.join(previous, "masks.npz"))
        previous_frozen = _by_kernel(self.model, os.path.join(previous, "frozen.npz"))
        reset_state = self.reset_state()
        gradients = None
        if config.criterion in masks.GRADIENT_CRITERIA:
            set_model_state(self.model, reset_state, source="reset weights")
            gradients = train_gradients(self.model, self.data, previous_masks)
        if engine.w_init_is_previous_start(config.mask_zero_action, round_index,
                                           config.one_shot):
            w_init = runs.kernels_from_state(
                self.model, run_files.load_arrays(os.path.join(previous, "initial.npz")),
                f"{previous}/initial.npz")
        else:
            w_init = runs.kernels_from_state(self.model, reset_state, "reset weights")
        arrays = engine.RoundArrays(
            masks=previous_masks, frozen=previous_frozen, w_init=w_init,
            w_final=runs.kernels_from_state(self.model, final_state, f"{previous}/final.npz"),
            gradients=gradients)
        return RoundInputs(round_index, reset_state, final_state, arrays)

    def prune(self, inputs: RoundInputs) -> None:
        """Resets the model and assigns the engine's masks, start and frozen values."""
        config = self.config
        set_model_state(self.model, inputs.reset_state, source="reset weights")
        results = engine.next_round(
            inputs.arrays, self.rates, config.criterion,
            engine.round_rng(config.seed, inputs.round_index),
            mask_one_action=config.mask_one_action, mask_zero_action=config.mask_zero_action,
            scope=config.prune_scope, block=config.block_size,
            level=self.prune_level(inputs.round_index), one_shot=config.one_shot)
        assign_round(self.model, results)


def _by_kernel(model, path: str) -> dict:
    """{kernel key: array} of a round's masks.npz or frozen.npz (one per masked kernel)."""
    arrays = run_files.load_arrays(path)
    missing = [slot.key for slot in kernel_slots(model) if slot.key not in arrays]
    if missing:
        raise run_files.CorruptFileError(f"{path}: no arrays for kernels {missing[:5]}")
    return {slot.key: np.asarray(arrays[slot.key]) for slot in kernel_slots(model)}


class ControlRuns:
    """The controls of a pruned round (`--controls`, docs/semantics.md, "One round engine").

    After the ticket's round trains, each control starts from the round's own starting
    point with one change (`tf_lth.core.rounds.control_round`), and trains on the same budget,
    Schedule and data order: `random` keeps the ticket's per-kernel kept counts at random
    positions (reset weights, the same mask-0 action); `reinit` keeps the ticket's mask
    on a fresh seeded initialisation. The ticket's trained state is restored afterwards.
    Nothing is checkpointed: the round's DONE marker covers its controls, so a resumed
    run redoes an unfinished round, controls included, and never a finished one.
    """

    def __init__(self, rounds: RoundTrainer, config):
        self.rounds, self.config = rounds, config

    def train(self, inputs: RoundInputs, start_state: dict, record: dict) -> None:
        """Trains every control; adds `controls` and `ticket_beats_controls` to `record`."""
        model = self.rounds.model
        ticket_state = model_state(model)
        ticket_masks = get_masks(model)
        results = {}
        for kind in self.config.controls:
            set_model_state(model, start_state, source="round start")
            assign_round(model, self.values(kind, inputs, ticket_masks))
            results[kind] = self.rounds.train_control(kind, inputs.round_index)
        set_model_state(model, ticket_state, source="ticket state")
        record["controls"] = results
        record["ticket_beats_controls"] = verdict(record)
        self.rounds.log(verdict_line(record))

    def values(self, kind: str, inputs: RoundInputs, ticket_masks: dict) -> dict:
        """The control's {kernel key: (mask, start, frozen)} from the round engine."""
        config, round_index = self.config, inputs.round_index
        fresh = None
        if kind == "reinit":
            fresh = {slot.key: fresh_kernel(slot, engine.fresh_init_seed(
                config.seed, round_index, index))
                for index, slot in enumerate(kernel_slots(self.rounds.model))}
        return engine.control_round(
            kind, ticket_masks, inputs.arrays, config.seed, round_index,
            mask_one_action=config.mask_one_action, mask_zero_action=config.mask_zero_action,
            fresh_init=fresh)


def fresh_kernel(slot, seed: int) -> np.ndarray:
    """A new draw of the kernel's initializer (a `tf_lth.core.wrap.KernelSlot`), seeded."""
    layer = slot.layer
    prefix = layer.SLOT_PREFIXES[slot.index]
    if prefix:  # SeparableConv2D: depthwise_initializer, pointwise_initializer
        initializer = getattr(layer, prefix + "initializer")
    else:  # DepthwiseConv2D's one kernel has depthwise_initializer
        initializer = getattr(layer, "kernel_initializer", None) or layer.depthwise_initializer
    initializer = keras.initializers.get(initializer)
    config = initializer.get_config()
    config["seed"] = int(seed)
    fresh = type(initializer).from_config(config)
    return np.asarray(keras.ops.convert_to_numpy(fresh(tuple(slot.kernel.shape),
                                                       dtype="float32")))


def verdict(record: dict) -> dict:
    """Ticket minus control test accuracy at best validation loss, in points."""
    ticket = record["best"]["test_accuracy"]
    points = {kind: 100.0 * (ticket - control["best"]["test_accuracy"])
              for kind, control in record["controls"].items()}
    return {**points, "beats_both": all(value > 0 for value in points.values())}


def verdict_line(record: dict) -> str:
    """round 3 (21.1% kept): ticket 98.1% vs random 97.0% (+1.1), ...: beats both."""
    verdicts = record["ticket_beats_controls"]
    parts = [f"{kind} {100 * control['best']['test_accuracy']:.1f}% "
             f"({verdicts[kind]:+.1f})" for kind, control in record["controls"].items()]
    beaten = [kind for kind in record["controls"] if verdicts[kind] > 0]
    if verdicts["beats_both"]:
        outcome = "beats both" if len(parts) > 1 else f"beats {beaten[0]}"
    else:
        outcome = "beats " + beaten[0] if beaten else "beats neither"
    return (f"round {record['round']} ({100 * record['weights_remaining']:.1f}% kept): "
            f"ticket {100 * record['best']['test_accuracy']:.1f}% vs {', '.join(parts)}: "
            f"{outcome}")


def controls_summary(records: list) -> dict:
    """results.json's summary of the controls: rounds where the ticket beats both."""
    checked = [r for r in records if "ticket_beats_controls" in r]
    if not checked:
        return {}
    return {"controls_summary": {
        "rounds_checked": [r["round"] for r in checked],
        "rounds_ticket_beats_all": [r["round"] for r in checked
                                    if r["ticket_beats_controls"]["beats_both"]],
    }}


class RoundFiles(RoundHooks):
    """One round's folder, and nothing else: checkpoint recovery, metrics and TensorBoard
    as evaluations arrive, in-round checkpoints, rewind snapshots, and the final files then
    DONE.

    It is given what it writes with: the run directory and round, the TensorBoard writer,
    `checkpoint()` (a `tf.train.Checkpoint` of the model and optimizer), `state()` (the
    model's state, for the rewind snapshot) and the iterations per round (TensorBoard's
    step).
    """

    def __init__(self, run_dir: str, round_index: int, tb_writer, checkpoint, state,
                 steps_per_round: int, kept_counts=None, kernel_sizes=None):
        self.run_dir, self.round_index = run_dir, round_index
        self.kept_counts = kept_counts  # {kernel key: kept} now, when masks change in training
        self.kernel_sizes = kernel_sizes or {}  # {kernel key: weights}
        self.mask_updates_path = os.path.join(run_files.round_dir(run_dir, round_index),
                                              "mask_updates.jsonl")
        self.folder = run_files.round_dir(run_dir, round_index)
        self.tb_writer, self.checkpoint, self.state = tb_writer, checkpoint, state
        self.steps_per_round = steps_per_round
        self.checkpoint_dir = os.path.join(self.folder, "checkpoint")
        self.metrics_path = os.path.join(self.folder, "metrics.jsonl")
        os.makedirs(self.folder, exist_ok=True)

    # ---- start or resume ---------------------------------------------------------------
    def recover(self) -> tuple:
        """(iteration, evaluation history) of the round's checkpoint, or (0, [])."""
        checkpoint_dir = self.checkpoint_dir
        if not os.path.isdir(checkpoint_dir) and os.path.isdir(checkpoint_dir + ".old"):
            os.replace(checkpoint_dir + ".old", checkpoint_dir)  # killed while swapping
        if not os.path.exists(os.path.join(checkpoint_dir, "state.json")):
            return 0, []
        state = run_files.read_json(os.path.join(checkpoint_dir, "state.json"))
        try:
            self.checkpoint().read(os.path.join(checkpoint_dir, "ckpt")).assert_consumed()
        except Exception as error:
            raise run_files.CorruptFileError(
                f"{checkpoint_dir}/ckpt: corrupt or truncated checkpoint ({type(error).__name__})"
            ) from None
        history = list(state["history"])
        # evaluations logged after the checkpoint are repeated, so they are dropped
        run_files.write_text(self.metrics_path,
                             "".join(json.dumps(item) + "\n" for item in history))
        iteration = int(state["iteration"])
        if os.path.exists(self.mask_updates_path):  # so are mask updates after it
            kept = [item for item in run_files.read_jsonl(self.mask_updates_path)
                    if item["iteration"] <= iteration]
            run_files.write_text(self.mask_updates_path,
                                 "".join(json.dumps(item) + "\n" for item in kept))
        return iteration, history

    def start(self, start_state: dict) -> None:
        """A fresh round: its starting weights saved, stale metrics removed."""
        run_files.save_arrays(os.path.join(self.folder, "initial.npz"), start_state)
        for path in (self.metrics_path, self.mask_updates_path):
            if os.path.exists(path):
                os.unlink(path)

    # ---- the loop's hooks --------------------------------------------------------------
    def evaluated(self, record: dict) -> None:
        run_files.append_jsonl(self.metrics_path, record)
        step = self.round_index * self.steps_per_round + record["iteration"]
        with self.tb_writer.as_default(step=step):
            for key, value in record.items():
                if key != "iteration":
                    tf.summary.scalar(f"round_{self.round_index:03d}/{key}", value)

    def snapshot(self, iteration: int) -> None:
        run_files.save_arrays(os.path.join(self.folder, "rewind.npz"), self.state())

    def masks_updated(self, iteration: int) -> None:
        """Each kernel's kept count after the update at step `iteration`: a line of
        mask_updates.jsonl and TensorBoard's per-kernel sparsity (tfmot's PruningSummaries)."""
        if self.kept_counts is None:
            return
        kept = self.kept_counts()
        run_files.append_jsonl(self.mask_updates_path, {"iteration": iteration, "kept": kept})
        step = self.round_index * self.steps_per_round + iteration
        with self.tb_writer.as_default(step=step):
            for key, count in kept.items():
                size = self.kernel_sizes.get(key) or 1
                tf.summary.scalar(f"pruning/{key}/sparsity", 1.0 - count / size)

    def save_checkpoint(self, iteration: int, history: list) -> None:
        """Model, optimizer and history at `iteration`, swapped in as one directory."""
        self.tb_writer.flush()  # TensorBoard keeps what precedes the checkpoint too
        temporary = tempfile.mkdtemp(prefix=".checkpoint-", dir=self.folder)
        self.checkpoint().write(os.path.join(temporary, "ckpt"))
        run_files.write_json(os.path.join(temporary, "state.json"),
                             {"iteration": iteration, "history": history})
        run_files.replace_directory(temporary, self.checkpoint_dir)

    # ---- the end -----------------------------------------------------------------------
    def finish(self, record: dict, arrays: dict) -> None:
        """The round's arrays ({file name: arrays}) and record, then DONE (written last)."""
        for name, values in arrays.items():
            run_files.save_arrays(os.path.join(self.folder, name), values)
        run_files.write_json(os.path.join(self.folder, "record.json"), record)
        self.remove_temporaries()
        run_files.mark_done(self.run_dir, self.round_index)

    def remove_temporaries(self) -> None:
        """The checkpoint, and temporary folders of checkpoints cut short by a kill."""
        run_files.remove_directory(self.checkpoint_dir)  # renamed away first: never half gone
        for name in os.listdir(self.folder):
            if name.startswith((".checkpoint-", ".removing-")) or name == "checkpoint.old":
                shutil.rmtree(os.path.join(self.folder, name), ignore_errors=True)
