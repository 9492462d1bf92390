"""Dense training and lottery-ticket rounds (docs/semantics.md).

Experiment layer of tf_lth. `LotteryRun.run()` reads as a table of contents: round 0
trains the dense network; each next round computes masks from the previous round's
files, applies the mask-1 and mask-0 actions, resets, and retrains with the same
compiled step. Every round is idempotent: a round with a DONE marker is skipped, so
`--resume` is running again.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile

import numpy as np
import tensorflow as tf

from tf_lth import actions, masks, models, run_files
from tf_lth.layers import masked_layers
from tf_lth.models import layer_group
from trainers import runs
from tf_lth.models import model_state, set_model_state
from trainers.loop import RoundHooks, Schedule, Trainer, mask_summary


class LotteryRun:
    """Iterative (or one-shot) pruning with rewinding; `--rounds=0` is dense training."""

    def __init__(self, config, data, model_factory, strategy, log=print):
        self.config = config
        self.data = data
        self.strategy = strategy
        self.log = log
        with strategy.scope():
            self.model = model_factory()
        self.layers = masked_layers(self.model)
        self.layer_names = [layer.name for layer in self.layers]
        self.iterations = config.train_iterations(data.steps_per_epoch(config.batch_size))
        self.trainer = Trainer(
            self.model, config.optimizer, config.learning_rate, config.momentum,
            strategy=strategy, jit_compile=config.jit_compile, log=log,
            weight_decay=config.weight_decay,
            cosine_steps=self.iterations if config.lr_schedule == "cosine" else 0)
        models.check_compatible(config, data)  # also --rewind_iteration against the length
        self.tb_writer = tf.summary.create_file_writer(os.path.join(config.run_dir, "tb"))
        self.initial_state = model_state(self.model)

    @property
    def pruned_rounds(self) -> list:
        if self.config.experiment == "dense" or self.config.rounds == 0:
            return []
        return [1] if self.config.one_shot else list(range(1, self.config.rounds + 1))

    def run(self) -> list:
        """Runs every round not yet done; returns the round records."""
        self.log(f"run directory: {self.config.run_dir}")
        runs.round_records(self.config.run_dir)  # a corrupt record stops us before training
        for round_index in [0] + self.pruned_rounds:
            if run_files.is_done(self.config.run_dir, round_index):
                self.log(f"round {round_index}: already complete, skipped")
                continue
            if round_index > 0:
                self._prune_round(round_index)
            self._train_round(round_index)
            records = runs.round_records(self.config.run_dir)
            runs.write_results(self.config.run_dir, self.config, records,
                               extra=controls_summary(records))
        records = runs.round_records(self.config.run_dir)
        runs.write_results(self.config.run_dir, self.config, records,
                           extra=controls_summary(records))
        return records

    # ---- between rounds ------------------------------------------------------------
    def prune_level(self, round_index: int) -> int:
        if round_index == 0:
            return 0
        return self.config.rounds if self.config.one_shot else round_index

    def _rng(self, round_index: int, purpose: int) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, round_index, purpose])

    def _reset_state(self) -> dict:
        """The weights rounds reset to: initial, or those of --rewind_iteration."""
        folder = run_files.round_dir(self.config.run_dir, 0)
        name = "rewind.npz" if self.config.rewind_iteration > 0 else "initial.npz"
        return run_files.load_arrays(os.path.join(folder, name))

    def _prune_round(self, round_index: int) -> None:
        """Computes the masks and starting values of `round_index` from earlier files."""
        config = self.config
        previous = run_files.round_dir(config.run_dir, 0 if config.one_shot else round_index - 1)
        final_state = run_files.load_arrays(os.path.join(previous, "final.npz"))
        previous_masks = run_files.load_arrays(os.path.join(previous, "masks.npz"))
        previous_frozen = run_files.load_arrays(os.path.join(previous, "frozen.npz"))
        reset_state = self._reset_state()
        w_init = runs.kernels_from_state(reset_state, self.layer_names)
        w_final = runs.kernels_from_state(final_state, self.layer_names)
        gradients = None
        if config.criterion in masks.GRADIENT_CRITERIA:
            set_model_state(self.model, reset_state)
            for layer in self.layers:
                layer.mask.assign(previous_masks[layer.name])
            gradients = kernel_gradients(self.model, self.data)
        rng = self._rng(round_index, 1)
        set_model_state(self.model, reset_state, source="reset weights")
        global_masks = None
        if getattr(config, "prune_scope", "layer") == "global":
            # One ranking across layers, down to the total the per-layer schedule keeps
            # (docs/semantics.md, "Global pruning"); tf_lth.find_ticket draws the same way.
            prev = {name: previous_masks[name] for name in self.layer_names}
            total = masks.global_prune_count(prev, {
                layer.name: config.rates[layer_group(self.model, layer)]
                for layer in self.layers}, self.prune_level(round_index))
            global_masks = masks.global_masks(
                config.criterion, {name: w_init[name] for name in prev},
                {name: w_final[name] for name in prev}, prev, 0.0, rng=rng,
                grad_init=gradients, num_prune=total, block=config.block_size)
        for layer in self.layers:
            name = layer.name
            rate = config.rates[layer_group(self.model, layer)]
            prev_mask = previous_masks[name]
            kwargs = dict(rng=rng, block=config.block_size,
                          grad_init=None if gradients is None else gradients[name])
            if config.one_shot:
                target = masks.kept_count(prev_mask.size, rate, config.rounds)
                kwargs["num_prune"] = int(prev_mask.sum()) - target
            if global_masks is not None:
                new_mask = global_masks[name]
            else:
                new_mask = masks.compute_mask(config.criterion, w_init[name], w_final[name],
                                              prev_mask, rate, **kwargs)
            start, frozen = actions.next_round_values(
                config.mask_one_action, config.mask_zero_action, w_init[name], w_final[name],
                new_mask, prev_mask, previous_frozen[name], rng,
            )
            layer.kernel_variable.assign(start.astype(np.float32))
            layer.mask.assign(new_mask.astype(np.float32))
            layer.frozen.assign(frozen.astype(np.float32))

    # ---- one round of training -----------------------------------------------------
    def _train_round(self, round_index: int) -> None:
        config = self.config
        folder = run_files.round_dir(config.run_dir, round_index)
        os.makedirs(folder, exist_ok=True)
        files = RoundFiles(self, round_index, folder)
        start_iteration, history = files.recover()
        if start_iteration:
            self.log(f"round {round_index}: resuming at iteration {start_iteration}")
        else:
            if round_index == 0:
                set_model_state(self.model, self.initial_state)
            self.trainer.reset_optimizer()
            files.start()
        self.trainer.set_learning_rate(config.learning_rate)
        weights_remaining, layer_fractions = mask_summary(self.model)
        self.log(f"round {round_index}: {100 * weights_remaining:.2f}% of weights remaining, "
                 f"{self.iterations} iterations")
        schedule = self.round_schedule(round_index)
        metrics = self.trainer.fit(self.data, schedule, files, start_iteration, history)
        self.tb_writer.flush()
        history = metrics.pop("history")
        record = {
            "round": round_index,
            "prune_level": self.prune_level(round_index),
            "criterion": config.criterion if round_index else "dense",
            "mask_one_action": config.mask_one_action,
            "mask_zero_action": config.mask_zero_action,
            "mask_block": config.mask_block,
            "weights_remaining": weights_remaining,
            "layers": layer_fractions,
            **metrics,
            "evaluations": len(history),
        }
        files.finish(record)
        best = record["best"]
        self.log(f"round {round_index}: test accuracy {100 * record['test_accuracy']:.2f}% "
                 f"(at best validation loss: {100 * best['test_accuracy']:.2f}%, iteration "
                 f"{best['iteration']}), {record['examples_per_second']:.0f} examples/s")

    def _finish_round(self, round_index: int, folder: str, record: dict) -> None:
        """Extra round files and record entries, written before the DONE marker."""
        if round_index > 0 and getattr(self.config, "controls", ()):
            ControlRuns(self).train(round_index, folder, record)

    def round_schedule(self, round_index: int, control: str | None = None) -> Schedule:
        """The round's Schedule; a control's has the same budget and data order but no
        checkpoints or rewind snapshots."""
        config = self.config
        return Schedule(
            iterations=self.iterations, batch_size=config.batch_size,
            seed=self._data_seed(round_index), eval_every=config.eval_every,
            checkpoint_every=0 if control else config.checkpoint_every,
            snapshot_at=(config.rewind_iteration,) if round_index == 0 and not control
            and config.rewind_iteration > 0 else (),
            round_index=round_index,
            label=f"round {round_index}" + (f" {control} control" if control else ""),
            progress=config.progress)

    def _data_seed(self, round_index: int) -> int:
        return self.config.seed * 1000 + round_index


CONTROL_PURPOSES = {"random": 11, "reinit": 12}  # rng purposes; 1 is the ticket's mask


class ControlRuns:
    """The controls of a pruned round (`--controls`, docs/semantics.md, "Controls").

    After the ticket's round trains, each control starts from the round's own starting
    point with one change, and trains on the same budget, Schedule and data order:
    `random` keeps the ticket's per-layer kept counts at random positions (reset weights,
    the same mask-0 action); `reinit` keeps the ticket's mask on a fresh seeded
    initialisation. The ticket's trained state is restored afterwards. Nothing is
    checkpointed: the round's DONE marker covers its controls, so a resumed run redoes
    an unfinished round, controls included, and never a finished one.
    """

    def __init__(self, run: LotteryRun):
        self.run = run

    def train(self, round_index: int, folder: str, record: dict) -> None:
        run, config = self.run, self.run.config
        ticket_state = model_state(run.model)
        start_state = run_files.load_arrays(os.path.join(folder, "initial.npz"))
        results = {}
        for kind in config.controls:
            set_model_state(run.model, start_state, source="round start")
            self.apply(kind, round_index)
            run.trainer.reset_optimizer()
            run.trainer.set_learning_rate(config.learning_rate)
            weights_remaining, layer_fractions = mask_summary(run.model)
            metrics = run.trainer.fit(run.data, run.round_schedule(round_index, control=kind))
            metrics.pop("history")
            results[kind] = {"weights_remaining": weights_remaining,
                             "layers": layer_fractions, **metrics}
        set_model_state(run.model, ticket_state, source="ticket state")
        record["controls"] = results
        record["ticket_beats_controls"] = verdict(record)
        run.log(verdict_line(record))

    def control_masks(self, kind: str, round_index: int) -> dict:
        """The control's mask per layer, from the ticket's masks now in the model."""
        run = self.run
        ticket = {layer.name: np.array(layer.mask) for layer in run.layers}
        if kind == "reinit":
            return ticket
        rng = run._rng(round_index, CONTROL_PURPOSES[kind])
        return {name: random_mask_like(mask, rng) for name, mask in ticket.items()}

    def apply(self, kind: str, round_index: int) -> None:
        """Sets the control's kernels, masks and frozen values on the model."""
        run, config = self.run, self.run.config
        controls = self.control_masks(kind, round_index)
        reset = run._reset_state()
        w_init = runs.kernels_from_state(reset, run.layer_names)
        previous = run_files.round_dir(config.run_dir, 0 if config.one_shot else round_index - 1)
        w_final = runs.kernels_from_state(
            run_files.load_arrays(os.path.join(previous, "final.npz")), run.layer_names)
        previous_masks = run_files.load_arrays(os.path.join(previous, "masks.npz"))
        previous_frozen = run_files.load_arrays(os.path.join(previous, "frozen.npz"))
        rng = run._rng(round_index, CONTROL_PURPOSES[kind] + 100)
        for index, layer in enumerate(run.layers):
            name, mask = layer.name, controls[layer.name]
            init = w_init[name]
            if kind == "reinit":
                init = fresh_kernel(layer, [config.seed, round_index, index, 7919])
            # mask-0 values as the ticket's: pruned positions of the control count as
            # pruned now (its mask need not be a subset of the previous one)
            prev_mask = np.maximum(previous_masks[name], mask)
            start, frozen = actions.next_round_values(
                config.mask_one_action, config.mask_zero_action, init, w_final[name],
                mask, prev_mask, previous_frozen[name], rng)
            layer.kernel_variable.assign(start.astype(np.float32))
            layer.mask.assign(mask.astype(np.float32))
            layer.frozen.assign(frozen.astype(np.float32))


def random_mask_like(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A 0/1 mask with `mask`'s shape and kept count, at random positions."""
    flat = np.zeros(mask.size, np.float32)
    flat[rng.permutation(mask.size)[:int(np.asarray(mask).sum())]] = 1.0
    return flat.reshape(mask.shape)


def fresh_kernel(layer, seed) -> np.ndarray:
    """A new draw of the layer's kernel initializer, seeded by `seed` (a list of ints)."""
    import keras

    initializer = layer.kernel_initializer
    config = initializer.get_config()
    config["seed"] = int(np.random.default_rng(seed).integers(2 ** 31 - 1))
    fresh = type(initializer).from_config(config)
    shape = tuple(layer.kernel_variable.shape)
    return np.asarray(keras.ops.convert_to_numpy(fresh(shape, dtype="float32")))


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
    """One round's folder: checkpoint recovery, metrics and TensorBoard as evaluations
    arrive, in-round checkpoints, rewind snapshots, and the final files then DONE."""

    def __init__(self, run: LotteryRun, round_index: int, folder: str):
        self.run, self.round_index, self.folder = run, round_index, folder
        self.checkpoint_dir = os.path.join(folder, "checkpoint")
        self.metrics_path = os.path.join(folder, "metrics.jsonl")

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
            self.run.trainer.checkpoint().read(
                os.path.join(checkpoint_dir, "ckpt")).assert_consumed()
        except Exception as error:
            raise run_files.CorruptFileError(
                f"{checkpoint_dir}/ckpt: corrupt or truncated checkpoint ({type(error).__name__})"
            ) from None
        history = list(state["history"])
        # evaluations logged after the checkpoint are repeated, so they are dropped
        run_files.write_text(self.metrics_path,
                             "".join(json.dumps(item) + "\n" for item in history))
        return int(state["iteration"]), history

    def start(self) -> None:
        """A fresh round: its starting weights saved, stale metrics removed."""
        run_files.save_arrays(os.path.join(self.folder, "initial.npz"),
                              model_state(self.run.model))
        if os.path.exists(self.metrics_path):
            os.unlink(self.metrics_path)

    # ---- the loop's hooks --------------------------------------------------------------
    def evaluated(self, record: dict) -> None:
        run_files.append_jsonl(self.metrics_path, record)
        step = self.round_index * self.run.iterations + record["iteration"]
        with self.run.tb_writer.as_default(step=step):
            for key, value in record.items():
                if key != "iteration":
                    tf.summary.scalar(f"round_{self.round_index:03d}/{key}", value)

    def snapshot(self, iteration: int) -> None:
        run_files.save_arrays(os.path.join(self.folder, "rewind.npz"),
                              model_state(self.run.model))

    def save_checkpoint(self, iteration: int, history: list) -> None:
        """Model, optimizer and history at `iteration`, swapped in as one directory."""
        self.run.tb_writer.flush()  # TensorBoard keeps what precedes the checkpoint too
        temporary = tempfile.mkdtemp(prefix=".checkpoint-", dir=self.folder)
        self.run.trainer.checkpoint().write(os.path.join(temporary, "ckpt"))
        run_files.write_json(os.path.join(temporary, "state.json"),
                             {"iteration": iteration, "history": history})
        run_files.replace_directory(temporary, self.checkpoint_dir)

    # ---- the end -----------------------------------------------------------------------
    def finish(self, record: dict) -> None:
        """Final weights, masks, frozen values and the record, then DONE (written last)."""
        run, folder = self.run, self.folder
        run_files.save_arrays(os.path.join(folder, "final.npz"), model_state(run.model))
        run_files.save_arrays(os.path.join(folder, "masks.npz"),
                              {layer.name: np.array(layer.mask) for layer in run.layers})
        run_files.save_arrays(os.path.join(folder, "frozen.npz"),
                              {layer.name: np.array(layer.frozen) for layer in run.layers})
        run._finish_round(self.round_index, folder, record)
        run_files.write_json(os.path.join(folder, "record.json"), record)
        self.remove_temporaries()
        run_files.mark_done(run.config.run_dir, self.round_index)

    def remove_temporaries(self) -> None:
        """The checkpoint, and temporary folders of checkpoints cut short by a kill."""
        run_files.remove_directory(self.checkpoint_dir)  # renamed away first: never half gone
        for name in os.listdir(self.folder):
            if name.startswith((".checkpoint-", ".removing-")) or name == "checkpoint.old":
                shutil.rmtree(os.path.join(self.folder, name), ignore_errors=True)


def kernel_gradients(model, data, num_examples: int = 1000) -> dict:
    """Loss gradient of each masked kernel at the current weights (for snip and grad)."""
    import keras

    images = tf.constant(data.train_images[:num_examples])
    labels = tf.constant(data.train_labels[:num_examples])
    layers = masked_layers(model)
    with tf.GradientTape() as tape:
        logits = model(images, training=False)
        loss = tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(
            labels, logits, from_logits=True))
    kernels = [layer.kernel_variable for layer in layers]
    gradients = tape.gradient(loss, kernels)
    return {layer.name: np.zeros(layer.kernel_variable.shape, np.float32) if grad is None
            else np.array(grad) for layer, grad in zip(layers, gradients)}
