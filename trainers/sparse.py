"""Sparse training beyond tickets through the CLI (docs/sparse_training.md).

Experiment layer of tf_lth: `--experiment=gradual` (tfmot's gradual magnitude pruning) and
`--experiment=dynamic_sparse` (RigL, SET, static random sparse) train one round, round 0,
whose masks change while it trains (`tf_lth.core.sparse_training.GradualUpdater` and
`DynamicUpdater`). The round is the lottery runs' round 0 in every other respect
(`trainers.lottery.RoundTrainer`): the same loop, data order, evaluations, checkpoints,
files and resume, so `tf_lth.export` and `tf_lth.plot` read it as they read a dense run. Compiled calls end just before each step
that changes the masks, the update runs between calls (`trainers.loop.Trainer.fit`), and
`round_000/mask_updates.jsonl` records each kernel's kept count there.
"""

from __future__ import annotations

from tf_lth.core import run_files
from tf_lth.core.config import gradual_window
from tf_lth.core.schedules import PolynomialDecay
from tf_lth.core.sparse_training import DynamicUpdater, GradualUpdater
from trainers import runs
from trainers.lottery import RoundTrainer


def make_updater(config, model, iterations: int):
    """The mask updater of the run's experiment, for a round of `iterations` steps."""
    if config.experiment == "gradual":
        begin, end, frequency = gradual_window(config, iterations)
        schedule = PolynomialDecay(config.initial_sparsity, config.final_sparsity, begin, end,
                                   power=config.pruning_power, frequency=frequency)
        return GradualUpdater(model, schedule, scope=config.prune_scope,
                              block=config.mask_block)
    updater = DynamicUpdater(model, config.final_sparsity, method=config.sparse_method,
                             distribution=config.sparsity_distribution,
                             update_every=config.update_every,
                             drop_fraction=config.drop_fraction,
                             end_step=config.update_end_step, seed=config.seed)
    updater.set_total_steps(iterations)
    return updater


def describe(config, updater, iterations: int) -> dict:
    """What the round's masks do, for its record and the log."""
    if isinstance(updater, GradualUpdater):
        return {"method": "gradual_magnitude", "scope": config.prune_scope,
                "block": config.mask_block, "schedule": updater.schedule.get_config(),
                "update_steps": len(updater.update_steps(iterations))}
    return {"method": config.sparse_method, "distribution": config.sparsity_distribution,
            "sparsity": config.final_sparsity, "update_every": updater.update_every,
            "drop_fraction": config.drop_fraction, "end_step": int(updater.end_step.numpy()),
            "densities": {key: float(value) for key, value in updater.densities.items()},
            "update_steps": len(updater.update_steps(iterations))}


class SparseTrainingRun:
    """One round whose masks change while it trains; `--resume` continues its checkpoint."""

    def __init__(self, config, data, model_factory, strategy, log=print):
        self.config, self.data, self.log = config, data, log
        with strategy.scope():
            self.model = model_factory()
        iterations = config.train_iterations(data.steps_per_epoch(config.batch_size))
        # before the round trainer snapshots the starting state: dynamic sparse training's
        # initial random masks are part of it
        self.updater = make_updater(config, self.model, iterations)
        self.rounds = RoundTrainer(config, data, self.model, strategy, log,
                                   mask_updater=self.updater)
        self.updater.optimizer = self.rounds.trainer.optimizer  # RigL/SET reset its moments
        self.description = describe(config, self.updater, iterations)

    def run(self) -> list:
        config = self.config
        self.log(f"run directory: {config.run_dir}")
        if run_files.is_done(config.run_dir, 0):
            self.log("round 0: already complete, skipped")
        else:
            self.log(self._summary_line())
            trained = self.rounds.train(0, 0)
            trained.record["sparse_training"] = self.description
            if isinstance(self.updater, GradualUpdater):
                trained.record["best"] = self._best_at_final_sparsity(trained.files)
            trained.files.finish(trained.record, self.rounds.round_arrays())
            self.rounds.log_result(trained.record)
            self.log(f"round 0: {100 * trained.record['weights_remaining']:.2f}% of weights "
                     "remaining at the end")
        records = runs.round_records(config.run_dir)
        runs.write_results(config.run_dir, config, records,
                           extra={"sparse_training": self.description})
        return records

    def _best_at_final_sparsity(self, files) -> dict:
        """The lowest-validation-loss evaluation among those at the final sparsity (from
        end_step on), as the tfmot baseline chooses: an earlier, denser network is not the
        one the run returns."""
        end = self.updater.schedule.end_step
        history = run_files.read_jsonl(files.metrics_path)
        at_target = [item for item in history if item["iteration"] >= end] or history[-1:]
        best = min(at_target, key=lambda item: item["val_loss"])
        return {key: best[key] for key in ("iteration", "val_loss", "val_accuracy",
                                           "test_accuracy")}

    def _summary_line(self) -> str:
        info = self.description
        if info["method"] == "gradual_magnitude":
            schedule = info["schedule"]["config"]
            return (f"gradual magnitude pruning ({info['scope']}, {info['block']}): sparsity "
                    f"{schedule['initial_sparsity']} to {schedule['final_sparsity']} from step "
                    f"{schedule['begin_step']} to {schedule['end_step']} every "
                    f"{schedule['frequency']} (power {schedule['power']}), "
                    f"{info['update_steps']} pruning steps")
        if not info["update_every"]:
            return (f"static sparse training ({info['distribution']}): a fixed random mask at "
                    f"sparsity {info['sparsity']}")
        return (f"dynamic sparse training ({info['method']}, {info['distribution']}): "
                f"sparsity {info['sparsity']} held from step 1, {info['update_steps']} mask "
                f"updates every {info['update_every']} steps up to step {info['end_step']}, "
                f"drop fraction {info['drop_fraction']}")
