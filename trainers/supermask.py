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

from tf_lth import actions, masks, preemption, run_files
from tf_lth.config import ConfigError
from tf_lth.layers import masked_layers
from tf_lth.models import layer_group
from trainers import runs
from trainers.lottery import LotteryRun, kernel_gradients
from tf_lth.models import model_state, set_model_state
from trainers.loop import Trainer

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
    raise ValueError(f"Unknown weight treatment {treatment!r}. Allowed: init, signed_constant, rescaled.")


class TreatedKernels:
    """`treated_kernel` on the device: the level-independent kernels are converted once."""

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
        layers = masked_layers(model)
        names = [layer.name for layer in layers]
        w_init = runs.kernels_from_state(initial, names)
        w_final = runs.kernels_from_state(final, names)
        gradients = None
        if any(name in masks.GRADIENT_CRITERIA for name in config.criteria):
            gradients = kernel_gradients(model, self.data)
        results_path = os.path.join(config.run_dir, "masks.jsonl")
        done = {(r["criterion"], r["weight_treatment"], r["prune_level"])
                for r in run_files.read_jsonl(results_path)}
        total = len(config.criteria) * len(self.levels()) * len(config.weight_treatments)
        started, count = time.time(), 0
        self.log(f"untrained supermasks: {total} evaluations "
                 f"({len(config.criteria)} criteria x {len(self.levels())} levels x "
                 f"{len(config.weight_treatments)} treatments)")
        treated = TreatedKernels(w_init)
        unsaved = []  # records since the last write: masks.jsonl is rewritten per criterion
        try:
            for criterion in config.criteria:
                for level in self.levels():
                    pending = [t for t in config.weight_treatments
                               if (criterion, t, level) not in done]
                    count += len(config.weight_treatments) - len(pending)
                    if not pending:
                        continue
                    rng = np.random.default_rng(
                        [config.seed, level, masks.CRITERIA.index(criterion)])
                    layer_masks = {}
                    for layer in layers:
                        name = layer.name
                        rate = config.rates[layer_group(model, layer)]
                        layer_masks[name] = masks.one_shot_mask(
                            criterion, w_init[name], w_final[name], rate, level, rng=rng,
                            grad_init=None if gradients is None else gradients[name],
                            block=config.block_size,
                        )
                    kept = sum(float(m.sum()) for m in layer_masks.values())
                    size = sum(m.size for m in layer_masks.values())
                    for layer in layers:  # one mask for every treatment of this level
                        layer.mask.assign(layer_masks[layer.name])
                    for treatment in pending:
                        signum = preemption.requested()
                        if signum:  # every record so far is written below: --resume goes on
                            raise preemption.Preempted(
                                signum,
                                where=f"untrained sweep evaluation {count + 1} of {total}")
                        for layer in layers:
                            layer.kernel_variable.assign(treated.kernel(
                                treatment, layer.name, layer_masks[layer.name]))
                        [(test_loss, test_accuracy)] = trainer.evaluate(self.data)
                        unsaved.append({
                            "criterion": criterion, "weight_treatment": treatment,
                            "prune_level": level, "weights_remaining": kept / size,
                            "layers": {n: float(m.mean()) for n, m in layer_masks.items()},
                            "test_accuracy": test_accuracy, "test_loss": test_loss,
                        })
                        count += 1
                    self.log(f"  {criterion:32s} level {level:2d}: "
                             f"{100 * kept / size:6.2f}% kept, [{count}/{total}] "
                             f"{time.time() - started:.0f}s")
                run_files.extend_jsonl(results_path, unsaved)
                unsaved.clear()
        finally:
            run_files.extend_jsonl(results_path, unsaved)  # on a signal or an error too
        records = run_files.read_jsonl(results_path)
        runs.write_results(config.run_dir, config, [], masks=records,
                           extra={"dense": dense_record,
                                  "sweep_seconds": time.time() - started})
        return records


class LearnedSupermaskRun(LotteryRun):
    """Trains mask logits on frozen weights; reports sampled and expected-mask accuracy.

    `--mask_sampling=topk` is edge-popup (docs/semantics.md, "Edge-popup"): each layer
    keeps exactly the top `--keep_fraction` of |score|, in training and evaluation.
    """

    @property
    def pruned_rounds(self) -> list:
        return []

    def _train_round(self, round_index: int) -> None:
        for layer in self.layers:
            layer.use_expected_mask.assign(1.0)  # periodic evaluations use the expected mask
        super()._train_round(round_index)

    def _finish_round(self, round_index: int, folder: str, record: dict) -> None:
        """Expected-mask metrics and masks, written before the round's DONE marker."""
        record.update(self.supermask_metrics())
        run_files.save_arrays(os.path.join(folder, "masks.npz"), self.expected_masks())
        self.log(f"learned supermask: expected mask {100 * record['test_accuracy_expected_mask']:.2f}%"
                 f", sampled {100 * record['test_accuracy_sampled']:.2f}% "
                 f"(mean of {self.config.eval_samples}), "
                 f"{100 * record['weights_remaining']:.2f}% weights remaining")

    def expected_masks(self) -> dict:
        if self.config.mask_sampling == "topk":
            return {layer.name: layer.fixed_mask() for layer in self.layers}
        return {layer.name: (np.array(layer.supermask_probabilities()) > 0.5).astype(np.float32)
                * np.array(layer.mask) for layer in self.layers}

    def supermask_metrics(self) -> dict:
        data = self.data
        for layer in self.layers:
            layer.use_expected_mask.assign(1.0)
        [(_, expected_accuracy)] = self.trainer.evaluate(data)
        for layer in self.layers:
            layer.use_expected_mask.assign(0.0)
        sampled = [self.trainer.evaluate(data)[0][1] for _ in range(
            1 if self.config.mask_sampling == "topk" else self.config.eval_samples)]
        for layer in self.layers:
            layer.use_expected_mask.assign(1.0)
        expected = self.expected_masks()
        kept = sum(float(m.sum()) for m in expected.values())
        size = sum(m.size for m in expected.values())
        probabilities = {layer.name: float(np.array(layer.supermask_probabilities()).mean())
                         for layer in self.layers}
        return {
            "test_accuracy_expected_mask": expected_accuracy,
            "test_accuracy_sampled": float(np.mean(sampled)),
            "test_accuracy_sampled_std": float(np.std(sampled)),
            "weights_remaining": kept / size,
            "layers": {name: float(m.mean()) for name, m in expected.items()},
            "mean_keep_probability": probabilities,
        }
