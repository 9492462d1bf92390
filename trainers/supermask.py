"""Supermasks: masks on untrained weights (docs/semantics.md, Supermasks).

Experiment layer of tf_lth. `UntrainedSupermaskRun` evaluates one-shot masks of every
criterion on the network's initial weights, with no training. `LearnedSupermaskRun`
trains only mask logits (sigmoid-Bernoulli sampling, straight-through gradient) on frozen
weights, through the shared training loop.
"""

from __future__ import annotations

import os
import time

import numpy as np
import tensorflow as tf

from tf_lth.core import actions, masks, preemption, run_files
from tf_lth.core import rounds as engine
from tf_lth.core.config import ConfigError
from tf_lth.core.layers import masked_layers
from tf_lth.core.models import layer_group, set_model_state
from tf_lth.core.wrap import kernel_slots
from trainers import runs
from trainers.loop import Trainer
from trainers.lottery import LotteryRun, RoundTrainer, train_gradients

def rescale_factor(mask: np.ndarray) -> float:
    """The `rescaled` treatment's factor: weights in the tensor over weights kept."""
    return mask.size / max(float(mask.sum()), 1.0)


def treated_kernel(treatment: str, w_init: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The untrained kernel under a weight treatment: init, signed_constant or rescaled."""
    if treatment == "init":
        return w_init
    if treatment == "signed_constant":
        return actions.signed_constant(w_init)
    if treatment == "rescaled":
        return w_init * rescale_factor(mask)
    raise ValueError(f"Unknown weight treatment {treatment!r}. Allowed: init, "
                     "signed_constant, rescaled.")


class TreatedKernels:
    """`treated_kernel` on the device, by kernel key: the level-independent kernels are
    converted once."""

    def __init__(self, w_init: dict):
        self._init = {name: tf.constant(np.asarray(kernel, np.float32))
                      for name, kernel in w_init.items()}
        self._signed = {name: tf.constant(treated_kernel("signed_constant", kernel, None)
                                          .astype(np.float32))
                        for name, kernel in w_init.items()}

    def kernel(self, treatment: str, name: str, mask: np.ndarray):
        if treatment == "init":
            return self._init[name]
        if treatment == "signed_constant":
            return self._signed[name]
        if treatment == "rescaled":  # float32 x float32, as numpy computes treated_kernel
            return self._init[name] * np.float32(rescale_factor(mask))
        raise ValueError(f"Unknown weight treatment {treatment!r}. Allowed: init, "
                         "signed_constant, rescaled.")


class UntrainedSupermaskRun:
    """Sweeps criteria x weight treatments x prune levels on the untrained network."""

    def __init__(self, config, data, model_factory, strategy, log=print):
        self.config, self.data, self.log = config, data, log
        self.model_factory, self.strategy = model_factory, strategy

    def _source(self):
        """(initial state, final state, dense record) of the dense source run."""
        config = self.config
        if config.source_run:
            folder = run_files.round_dir(config.source_run, 0)
            if not os.path.exists(os.path.join(folder, "DONE")):
                raise ConfigError(
                    f"--source_run={config.source_run!r} has no completed dense round "
                    f"({folder}/DONE missing); allowed: the run_dir of a finished dense or "
                    "lottery run."
                )
        else:
            dense = LotteryRun(config, self.data, self.model_factory, self.strategy, self.log)
            if not run_files.is_done(config.run_dir, 0):
                dense.run()
            folder = run_files.round_dir(config.run_dir, 0)
        initial = run_files.load_arrays(os.path.join(folder, "initial.npz"))
        final = run_files.load_arrays(os.path.join(folder, "final.npz"))
        record = run_files.read_json(os.path.join(folder, "record.json"))
        return initial, final, record

    def levels(self) -> list:
        return list(self.config.prune_levels) or list(range(0, 25))

    def run(self) -> list:
        config = self.config
        initial, final, dense_record = self._source()
        with self.strategy.scope():
            model = self.model_factory()
        try:
            set_model_state(model, initial, source="source initial weights")
        except run_files.CorruptFileError as error:
            raise ConfigError(
                f"--source_run: {error}; allowed: a run of the same --arch and --dataset."
            ) from None
        trainer = Trainer(model, "sgd", 0.1, strategy=self.strategy,
                          jit_compile=config.jit_compile, log=self.log)
        dense = self._dense_arrays(model, initial, final)
        results_path = os.path.join(config.run_dir, "masks.jsonl")
        done = {(r["criterion"], r["weight_treatment"], r["prune_level"])
                for r in run_files.read_jsonl(results_path)}
        total = len(config.criteria) * len(self.levels()) * len(config.weight_treatments)
        self.progress = {"count": 0, "total": total, "started": time.time()}
        self.log(f"untrained supermasks: {total} evaluations "
                 f"({len(config.criteria)} criteria x {len(self.levels())} levels x "
                 f"{len(config.weight_treatments)} treatments)")
        treated = TreatedKernels(dense.w_init)
        unsaved = []  # records since the last write: masks.jsonl is rewritten per criterion
        try:
            for criterion in config.criteria:
                for level in self.levels():
                    pending = [t for t in config.weight_treatments
                               if (criterion, t, level) not in done]
                    self.progress["count"] += len(config.weight_treatments) - len(pending)
                    if pending:
                        self._evaluate_level(model, trainer, dense, treated, criterion,
                                             level, pending, unsaved)
                run_files.extend_jsonl(results_path, unsaved)
                unsaved.clear()
        finally:
            run_files.extend_jsonl(results_path, unsaved)  # on a signal or an error too
        records = run_files.read_jsonl(results_path)
        runs.write_results(config.run_dir, config, [], masks=records,
                           extra={"dense": dense_record,
                                  "sweep_seconds": time.time() - self.progress["started"]})
        return records

    def _dense_arrays(self, model, initial: dict, final: dict) -> engine.RoundArrays:
        """The round engine's inputs of a one-shot prune of the dense source network."""
        w_init = runs.kernels_from_state(model, initial, "source initial weights")
        gradients = None
        if any(name in masks.GRADIENT_CRITERIA for name in self.config.criteria):
            gradients = train_gradients(model, self.data)
        return engine.RoundArrays(
            masks={key: np.ones(value.shape, np.float32) for key, value in w_init.items()},
            frozen={key: np.zeros(value.shape, np.float32) for key, value in w_init.items()},
            w_init=w_init, w_final=runs.kernels_from_state(model, final, "source final weights"),
            gradients=gradients)

    def _evaluate_level(self, model, trainer, dense, treated, criterion: str, level: int,
                        pending: list, records: list) -> None:
        """One one-shot mask of `criterion` at `level` (the round engine), evaluated
        untrained under each pending weight treatment; each record is appended to `records`
        as soon as it exists, so a signal between treatments loses none of them."""
        config, progress = self.config, self.progress
        slots = kernel_slots(model)
        rates = {slot.key: config.rates[layer_group(model, slot.layer)] for slot in slots}
        rng = np.random.default_rng([config.seed, level, masks.CRITERIA.index(criterion)])
        results = engine.next_round(dense, rates, criterion, rng, block=config.block_size,
                                    level=level, one_shot=True, values=False)
        kernel_masks = {key: mask for key, (mask, _, _) in results.items()}
        fraction, fractions = engine.weights_remaining(kernel_masks)
        for slot in slots:  # one mask for every treatment of this level
            slot.mask.assign(kernel_masks[slot.key])
        for treatment in pending:
            signum = preemption.requested()
            if signum:  # every record so far is written: --resume goes on
                raise preemption.Preempted(
                    signum, where=f"untrained sweep evaluation {progress['count'] + 1} of "
                    f"{progress['total']}")
            for slot in slots:
                slot.kernel.assign(treated.kernel(treatment, slot.key, kernel_masks[slot.key]))
            [(test_loss, test_accuracy)] = trainer.evaluate(self.data)
            records.append({
                "criterion": criterion, "weight_treatment": treatment, "prune_level": level,
                "weights_remaining": fraction, "layers": dict(fractions),
                "test_accuracy": test_accuracy, "test_loss": test_loss,
            })
            progress["count"] += 1
        self.log(f"  {criterion:32s} level {level:2d}: {100 * fraction:6.2f}% kept, "
                 f"[{progress['count']}/{progress['total']}] "
                 f"{time.time() - progress['started']:.0f}s")


class LearnedSupermaskRun:
    """Trains mask logits on frozen weights; reports sampled and expected-mask accuracy.

    One round (round 0) through the shared `RoundTrainer`, as a dense run's. Its masks.npz
    holds the expected masks. `--mask_sampling=topk` is edge-popup (docs/semantics.md,
    "Edge-popup"): each layer keeps exactly the top `--keep_fraction` of |score|, in
    training and evaluation.
    """

    def __init__(self, config, data, model_factory, strategy, log=print):
        self.config, self.data, self.log = config, data, log
        with strategy.scope():
            self.model = model_factory()
        self.rounds = RoundTrainer(config, data, self.model, strategy, log)
        self.trainer = self.rounds.trainer
        self.layers = masked_layers(self.model)

    def run(self) -> list:
        """Trains the supermask unless its round is done; returns the round records."""
        config = self.config
        self.log(f"run directory: {config.run_dir}")
        runs.round_records(config.run_dir)  # a corrupt record stops us before training
        if run_files.is_done(config.run_dir, 0):
            self.log("round 0: already complete, skipped")
        else:
            self._use_expected_mask(1.0)  # periodic evaluations use the expected mask
            trained = self.rounds.train(0, prune_level=0)
            arrays = self.rounds.round_arrays()  # before sampling moves the seed states
            record = trained.record
            record.update(self.supermask_metrics())
            arrays["masks.npz"] = self.expected_masks()
            trained.files.finish(record, arrays)
            self.log(f"learned supermask: expected mask "
                     f"{100 * record['test_accuracy_expected_mask']:.2f}%, sampled "
                     f"{100 * record['test_accuracy_sampled']:.2f}% (mean of "
                     f"{config.eval_samples}), {100 * record['weights_remaining']:.2f}% "
                     "weights remaining")
            self.rounds.log_result(record)
        records = runs.round_records(config.run_dir)
        runs.write_results(config.run_dir, config, records)
        return records

    def _use_expected_mask(self, value: float) -> None:
        for layer in self.layers:
            layer.use_expected_mask.assign(value)

    def expected_masks(self) -> dict:
        """{kernel key: the fixed mask} (edge-popup: its top-k; else sigmoid(s) > 0.5)."""
        if self.config.mask_sampling == "topk":
            return {slot.key: slot.layer.fixed_mask(slot.index)
                    for slot in kernel_slots(self.model)}
        return {slot.key: (np.array(slot.layer.supermask_probabilities(slot.index)) > 0.5)
                .astype(np.float32) * np.array(slot.mask) for slot in kernel_slots(self.model)}

    def supermask_metrics(self) -> dict:
        data = self.data
        self._use_expected_mask(1.0)
        [(_, expected_accuracy)] = self.trainer.evaluate(data)
        self._use_expected_mask(0.0)
        sampled = [self.trainer.evaluate(data)[0][1] for _ in range(
            1 if self.config.mask_sampling == "topk" else self.config.eval_samples)]
        self._use_expected_mask(1.0)
        weights_remaining, fractions = engine.weights_remaining(self.expected_masks())
        probabilities = {
            slot.key: float(np.array(slot.layer.supermask_probabilities(slot.index)).mean())
            for slot in kernel_slots(self.model)}
        return {
            "test_accuracy_expected_mask": expected_accuracy,
            "test_accuracy_sampled": float(np.mean(sampled)),
            "test_accuracy_sampled_std": float(np.std(sampled)),
            "weights_remaining": weights_remaining,
            "layers": fractions,
            "mean_keep_probability": probabilities,
        }
