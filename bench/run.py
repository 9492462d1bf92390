"""`python -m bench.run` (`make bench`): tf_lth's speed and size, as ratios against what a
user would pick instead, each timed in this process and alternated with ours.

1. fc 784-300-100-10 at batch 60 (Adam): the CLI's masked lottery round, end to end
   (`python -m tf_lth.train`, examples/s read from results.json), against Keras
   `model.fit(jit_compile=True, steps_per_execution=100)` of the same stock network, a
   plain per-batch `tf.function` loop, and PyTorch eager with the mask re-applied after
   each optimizer step (when torch is installed: `pip install -e '.[bench]'`). Our
   in-process loop, masked and with stock layers, is kept as a diagnostic.
2. FLOP utilisation of that fc round against a large matmul on this machine.
3. The learned supermask round at batch 250 against the dense round in the same loop.
4. conv2 on synthetic 32x32x3 images at batch 60: our loop against `model.fit` (XLA).
5. A round evaluating validation and test every 100 iterations against evaluation only at
   the end.
6. Overhead between lottery rounds; the untrained-supermask sweep (every criterion x 25
   levels x 3 weight treatments) against its evaluation-only floor.
7. Export: size per format and LiteRT latency per example against the dense network's
   float LiteRT file; and 1x1 vs 1x4 lottery tickets at 7.0% kept, exported sparse.
8. Sparse training through the CLI (bench/sparse.py): native gradual pruning against tfmot's
   in its Keras 2 subprocess; RigL, SET and static against dense, in the same loop.

Writes bench/results.json and prints the table. `--quick` runs shorter measurements;
`--only=fc,conv2` runs some sections and keeps the others from the last results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402

from tf_lth.core import choices  # noqa: E402

# Useful FLOPs of one fc training example: forward 2 x MACs; weight gradients 2 x MACs;
# input gradients 2 x MACs of every layer but the first (its input is data, not a variable).
FC_SHAPES = [(784, 300), (300, 100), (100, 10)]
FC_MACS = sum(a * b for a, b in FC_SHAPES)
FC_TRAIN_FLOPS = 2 * FC_MACS + 2 * FC_MACS + 2 * sum(a * b for a, b in FC_SHAPES[1:])
FC_LEVEL_7 = 12  # rounds of the fc schedule that leave 7.0% of the weights
TARGETS = {
    "cli_vs_keras_fit_xla": 2.0,       # issue 12: CLI masked round >= 2x model.fit (XLA)
    "cli_vs_torch_eager_masked": 2.0,  # ... and >= 2x PyTorch eager with masks
    "fc_flop_utilisation": 0.35,       # ... fc step FLOPs >= 35% of a large matmul
    "supermask_vs_dense": 0.8,         # learned supermask round >= 0.8x dense (batch 250)
    "conv2_vs_keras_fit_xla": 1.0,     # conv2 b60 in our loop >= model.fit (XLA)
    "eval_every_100_max_ratio": 1.7,   # --eval_every=100 round <= 1.7x evaluation at the end
    "sweep_max_seconds": 60.0,         # untrained sweep on real MNIST under 60 s
    "block_1x4_speedup": 1.3,          # issue 9: 1x4 ticket at 7.0% >= 1.3x faster than dense
}


def log(message: str) -> None:
    print(message, flush=True)


# ---- data and models ---------------------------------------------------------------------
def load_mnist():
    """(Data, 'real MNIST' or 'synthetic MNIST-shaped' and why)."""
    from tf_lth.core import data as data_lib

    folder = os.environ.get("TFDS_DATA_DIR")
    if folder and os.path.isdir(os.path.join(folder, "mnist")):
        try:
            return data_lib.load("mnist", folder, download=False), "real MNIST (tfds)"
        except Exception as error:  # fall back to synthetic, and say so
            reason = f"real MNIST unreadable ({type(error).__name__})"
    else:
        reason = "TFDS_DATA_DIR has no prepared mnist"
    data = data_lib.synthetic((28, 28, 1), num_train=55000, num_val=5000, num_test=10000,
                              name="synthetic_mnist")
    return data, f"synthetic MNIST-shaped images ({reason})"


def timing_view(data, train_examples: int, count: int = 100):
    """The first `train_examples` training examples, with tiny validation/test sets.

    One epoch of this view is one timed `Trainer.fit` call: the per-epoch work of the data
    pipeline (permutation, gather, dataset creation) scales with the epoch as in a full run,
    and evaluation (timed separately elsewhere) costs next to nothing.
    """
    from tf_lth.core import data as data_lib

    return data_lib.Data(data.name, data.train_images[:train_examples],
                         data.train_labels[:train_examples],
                         data.val_images[:count], data.val_labels[:count],
                         data.test_images[:count], data.test_labels[:count], data.num_classes)


def masked_model(arch: str, shape, seed: int = 0, supermask: bool = False):
    from tf_lth.core import models

    import numpy as np

    from tf_lth.core.layers import masked_layers

    # what tf_lth.core.models.for_config builds for the lottery preset (mask-0 action zero) and the
    # learned-supermask preset (kernels set once to signed constants)
    options = dict(frozen_values=False)
    if supermask:
        options.update(supermask=True, dynamic_scaling=False, sigmoid_bias=0.0,
                       mask_sampling="bernoulli")
    model = models.build(arch, shape, 10, seed=seed, **options)
    if supermask:
        for layer in masked_layers(model):
            kernel = np.array(layer.kernel_variable)
            layer.kernel_variable.assign((np.sign(kernel) * np.std(kernel)).astype(np.float32))
    return model


def plain_twin(model):
    """The same network with stock Keras Dense/Conv2D layers (and the same weights)."""
    from export.bake import bake

    return bake(model)


def rates_of(model, arch: str) -> dict:
    from tf_lth.core import config as config_lib
    from tf_lth.core.layers import masked_layers
    from tf_lth.core.models import layer_group

    rates = config_lib.ARCH_PRESETS[arch]["rates"]
    return {layer.name: rates[layer_group(model, layer)] for layer in masked_layers(model)}


def apply_lottery_masks(model, arch: str, rounds: int, w_final=None, block: int = 1,
                        criterion: str = "large_final", seed: int = 0) -> float:
    """Sets each masked layer's mask to a one-shot `criterion` mask at `rounds`' level.

    Uses the layer's own kernel as w_init, and `w_final` (name -> kernel) when given.
    Returns the fraction of kernel weights kept.
    """
    from tf_lth.core import masks
    from tf_lth.core.layers import masked_layers

    rng = np.random.default_rng(seed)
    rates = rates_of(model, arch)
    kept = size = 0
    for layer in masked_layers(model):
        w_init = layer.kernel_variable.numpy()
        final = w_init if w_final is None else w_final[layer.name]
        mask = masks.one_shot_mask(criterion, w_init, final, rates[layer.name], rounds,
                                   rng=rng, block=block)
        layer.mask.assign(mask.astype(np.float32))
        kept += float(mask.sum())
        size += mask.size
    return kept / size


# ---- measurements ------------------------------------------------------------------------
def alternate(measures: dict, repeats: int) -> dict:
    """Runs named measurements in turns (a, b, c, a, b, c, ...), `repeats` times.

    Each measurement returns (examples, wall seconds). Returns, per name, the mean and the
    samples of examples/s: alternating spreads the machine's other load over all of them.
    """
    samples = {name: [] for name in measures}
    for _ in range(repeats):
        for name, measure in measures.items():
            examples, seconds = measure()
            samples[name].append(examples / seconds)
    return {name: {"examples_per_second": statistics.mean(rates),
                   "samples": [round(rate, 1) for rate in rates]}
            for name, rates in samples.items()}


def our_loop(model, data, batch: int, iterations: int, optimizer: str = "adam",
             learning_rate: float = 1.2e-3, eval_every: int = 10**9):
    """tf_lth's Trainer in this process: a closure timing one `Trainer.fit` round."""
    from trainers.loop import Schedule, Trainer

    trainer = Trainer(model, optimizer, learning_rate, 0.9, log=lambda message: None)
    trainer.fit(data, Schedule(min(iterations, 20), batch, seed=0, eval_every=10**9,
                               progress=False))  # warm-up: traces and compiles

    def measure():
        trainer.reset_optimizer()
        started = time.perf_counter()
        trainer.fit(data, Schedule(iterations, batch, seed=1, eval_every=eval_every,
                                   progress=False))
        return iterations * batch, time.perf_counter() - started

    measure.trainer = trainer
    return measure


def fc_against_references(data, data_dir, repeats: int, quick: bool) -> dict:
    """fc, batch 60: the CLI's masked lottery round against what a user would use instead."""
    import bench.references as refs

    batch = 60
    examples = data.steps_per_epoch(batch) * batch
    if quick:
        examples = min(examples, 12000)
    masked = masked_model("fc", data.image_shape)
    fraction = apply_lottery_masks(masked, "fc", 1)  # round 1 of the lottery: 80% kept
    measures = {
        "keras_fit_xla": refs.keras_fit("fc", data, batch, examples),
        "tf_function_loop": refs.tf_function_loop("fc", data, batch, examples),
        "our_loop_masked": our_loop(masked, timing_view(data, examples), batch,
                                    examples // batch),
        "our_loop_plain": our_loop(plain_twin(masked_model("fc", data.image_shape)),
                                   timing_view(data, examples), batch, examples // batch),
    }
    skipped = {}
    why_not = refs.torch_available()
    if why_not:
        skipped["torch_eager_masked"] = why_not
    else:
        measures["torch_eager_masked"] = refs.torch_masked_fc(data, batch, examples, kept=0.8)
    if data_dir and not quick:
        measures["cli_lottery_round"] = refs.cli_round(
            ["--experiment=lottery", "--arch=fc", "--rounds=1", "--epochs=1",
             "--batch_size=60", "--eval_every=1000000", "--seed=0"], data_dir)
    else:
        skipped["cli_lottery_round"] = ("needs real MNIST (TFDS_DATA_DIR) and a full run"
                                        if not quick else "not run with --quick")
    rates = alternate(measures, repeats)
    ours = rates.get("cli_lottery_round", rates["our_loop_masked"])
    ratios = {name: ours["examples_per_second"] / entry["examples_per_second"]
              for name, entry in rates.items()}
    return {"batch_size": batch, "examples_per_measurement": examples,
            "lottery_mask_kept": fraction, "rates": rates, "skipped": skipped,
            "ours": "cli_lottery_round" if "cli_lottery_round" in rates else "our_loop_masked",
            "ratios_of_ours": ratios,
            "diagnostic_masked_vs_plain_our_loop":
                rates["our_loop_masked"]["examples_per_second"]
                / rates["our_loop_plain"]["examples_per_second"]}


def supermask_against_dense(data, repeats: int, quick: bool) -> dict:
    """Learned supermask (SGD) and dense (Adam, SGD) rounds at batch 250 in our loop."""
    batch = 250
    iterations = (12000 if quick else data.steps_per_epoch(batch) * batch) // batch
    view = timing_view(data, iterations * batch)
    measures = {
        "dense_adam": our_loop(masked_model("fc", data.image_shape), view, batch, iterations),
        "dense_sgd": our_loop(masked_model("fc", data.image_shape), view, batch, iterations,
                              optimizer="sgd", learning_rate=0.01),
        "supermask_sgd": our_loop(masked_model("fc", data.image_shape, supermask=True), view,
                                  batch, iterations, optimizer="sgd", learning_rate=100.0),
    }
    rates = alternate(measures, repeats)
    supermask = rates["supermask_sgd"]["examples_per_second"]
    return {"batch_size": batch, "iterations": iterations, "rates": rates,
            "ratio_vs_dense_adam": supermask / rates["dense_adam"]["examples_per_second"],
            "ratio_vs_dense_sgd": supermask / rates["dense_sgd"]["examples_per_second"],
            "tracings": {name: measure.trainer.train_tracing_count
                         for name, measure in measures.items()}}


def conv2_against_keras_fit(repeats: int, quick: bool) -> dict:
    """conv2 on synthetic 32x32x3 images at batch 60: our loop (lottery mask) against
    `model.fit(jit_compile=True, steps_per_execution=100)` of the stock network."""
    import bench.references as refs
    from tf_lth.core import data as data_lib

    batch = 60
    iterations = 20 if quick else 60
    data = data_lib.synthetic((32, 32, 3), num_train=batch * iterations, num_val=60,
                              num_test=60, seed=0)
    masked = masked_model("conv2", data.image_shape)
    fraction = apply_lottery_masks(masked, "conv2", 1)
    measures = {"keras_fit_xla": refs.keras_fit("conv2", data, batch, batch * iterations),
                "our_loop_masked": our_loop(masked, data, batch, iterations)}
    rates = alternate(measures, repeats)
    return {"batch_size": batch, "iterations": iterations, "lottery_mask_kept": fraction,
            "rates": rates, "ratio": rates["our_loop_masked"]["examples_per_second"]
            / rates["keras_fit_xla"]["examples_per_second"]}


def evaluation_cost(data, repeats: int, quick: bool) -> dict:
    """One masked fc round (batch 60) evaluating every 100 iterations on validation and
    test, against the same round evaluating only at the end; seconds per round."""
    batch = 60
    iterations = 200 if quick else data.steps_per_epoch(batch)
    model = masked_model("fc", data.image_shape)
    apply_lottery_masks(model, "fc", 1)
    measures = {"eval_at_end": our_loop(model, data, batch, iterations),
                "eval_every_100": our_loop(model, data, batch, iterations, eval_every=100)}
    rates = alternate(measures, repeats)
    seconds = {name: iterations * batch / entry["examples_per_second"]
               for name, entry in rates.items()}
    return {"iterations": iterations, "evaluations": iterations // 100 + 1,
            "validation_examples": len(data.val_labels), "test_examples": len(data.test_labels),
            "seconds": seconds, "ratio": seconds["eval_every_100"] / seconds["eval_at_end"]}


def matmul_gflops(n: int, m: int, k: int, repeats: int = 5, inner: int = 20) -> float:
    """Best GFLOP/s of `inner` distinct float32 [n,k] @ [k,m] matmuls in a compiled loop.

    Every matmul has its own left operand (a while loop over a stack), so no two are the
    same expression and the graph optimiser cannot merge them.
    """
    import tensorflow as tf

    a = tf.random.normal((inner, n, k))
    b = tf.random.normal((k, m))

    @tf.function
    def chain(a, b):
        total = tf.zeros((n, m))
        for index in tf.range(inner):
            total += tf.matmul(a[index], b)
        return total

    chain(a, b).numpy()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        chain(a, b).numpy()
        best = min(best, time.perf_counter() - started)
    return 2.0 * n * m * k * inner / best / 1e9


def fc_step_dots_seconds(batch: int = 60, repeats: int = 5, inner: int = 200) -> float:
    """Best seconds per step of the fc step's eight matmuls alone (forward, weight and input
    gradients, FC_TRAIN_FLOPS per example) in one XLA-compiled loop: the time the step
    would take if nothing but its matrix products ran."""
    import tensorflow as tf

    images = tf.random.normal((inner, batch, FC_SHAPES[0][0]))
    kernels = [tf.random.normal(shape, stddev=0.05) for shape in FC_SHAPES]

    @tf.function(jit_compile=True)
    def steps(images, w1, w2, w3):
        totals = [tf.zeros_like(w1), tf.zeros_like(w2), tf.zeros_like(w3)]
        index = tf.constant(0)
        while index < inner:
            x = images[index]
            h1 = x @ w1
            h2 = h1 @ w2
            g3 = h2 @ w3  # stands in for the logits' gradient
            g2 = tf.matmul(g3, w3, transpose_b=True)
            g1 = tf.matmul(g2, w2, transpose_b=True)
            totals = [totals[0] + tf.matmul(x, g1, transpose_a=True),
                      totals[1] + tf.matmul(h1, g2, transpose_a=True),
                      totals[2] + tf.matmul(h2, g3, transpose_a=True)]
            index += 1
        return totals

    steps(images, *kernels)[0].numpy()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        steps(images, *kernels)[0].numpy()
        best = min(best, time.perf_counter() - started)
    return best / inner


def between_rounds(data, iterations: int, run_dir: str) -> dict:
    """Seconds from the end of one lottery round's training to the start of the next."""
    from tf_lth.core import config as config_lib
    from tf_lth.core import models
    from tf_lth.core.distribute import make_strategy
    from trainers.lottery import LotteryRun

    config = config_lib.make(experiment="lottery", dataset="mnist", arch="fc", rounds=2,
                             iterations=iterations, eval_every=iterations, batch_size=60,
                             run_dir=run_dir, progress=False, seed=0)
    strategy = make_strategy("default")
    run = LotteryRun(config, data, models.for_config(config, data), strategy,
                     log=lambda message: None)
    marks = []
    original = run.trainer.fit

    def timed_fit(*args, **kwargs):
        marks.append(("start", time.perf_counter()))
        result = original(*args, **kwargs)
        marks.append(("end", time.perf_counter()))
        return result

    run.trainer.fit = timed_fit
    records = run.run()
    gaps = [marks[i + 1][1] - marks[i][1] for i in range(1, len(marks) - 1, 2)]
    return {"gaps_seconds": gaps, "seconds": statistics.median(gaps),
            "round_records": records, "run_dir": run_dir, "config": config}


def untrained_sweep(data, source_run: str, run_dir: str, levels=None) -> dict:
    from tf_lth.core import config as config_lib
    from tf_lth.core import models
    from tf_lth.core.distribute import make_strategy
    from tf_lth.core import masks
    from trainers.supermask import UntrainedSupermaskRun

    config = config_lib.make(
        experiment="untrained_supermask", dataset="mnist", arch="fc",
        criterion=",".join(masks.CRITERIA), source_run=source_run, run_dir=run_dir,
        prune_levels=",".join(map(str, levels or range(25))), progress=False,
        weight_treatments="init,signed_constant,rescaled", seed=0)
    strategy = make_strategy("default")
    run = UntrainedSupermaskRun(config, data, models.for_config(config, data), strategy,
                                log=lambda message: None)
    started = time.perf_counter()
    records = run.run()
    seconds = time.perf_counter() - started
    return {"seconds": seconds, "evaluations": len(records),
            "criteria": len(config.criteria), "levels": len(run.levels()),
            "treatments": len(config.weight_treatments), "records": records}


def eval_seconds(model, data, repeats: int = 5) -> float:
    """Best seconds of one compiled evaluation of the test set in our Trainer."""
    from trainers.loop import Trainer

    trainer = Trainer(model, "sgd", 0.01, log=lambda message: None)
    trainer.evaluate(data)
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        trainer.evaluate(data)
        best = min(best, time.perf_counter() - started)
    return best


def trained_fc(state_path: str, shape):
    """(masked fc with the trained weights of `state_path`, {layer: trained kernel})."""
    from tf_lth.core import run_files
    from tf_lth.core.layers import masked_layers
    from tf_lth.core.models import set_model_state

    model = masked_model("fc", shape, seed=0)
    set_model_state(model, run_files.load_arrays(state_path))
    return model, {layer.name: layer.kernel_variable.numpy() for layer in masked_layers(model)}


def export_figures(data, trained_state: str, out_dir: str, repeats: int) -> dict:
    """Export sizes and latencies of a 7.0% lottery ticket; 1x1 vs 1x4 sparse latency."""
    from export import convert, export_all, latency_per_example
    from export.tflite import weight_storage

    shape = data.image_shape
    images = data.test_images[:200]
    dense, w_final = trained_fc(trained_state, shape)
    reference_bytes = convert(plain_twin(dense), "tflite")
    reference_latency = latency_per_example(reference_bytes, images, num_threads=1, repeats=1)

    ticket, _ = trained_fc(trained_state, shape)
    fraction = apply_lottery_masks(ticket, "fc", FC_LEVEL_7, w_final=w_final)
    report = export_all(ticket, os.path.join(out_dir, "export"),
                        list(choices.EXPORT_FORMATS),
                        data.test_images[:2000], data.test_labels[:2000],
                        data.train_images[:1000], shape)
    formats = {}
    for name, entry in report["formats"].items():
        latency = entry.get("latency_per_example_s")
        formats[name] = {
            "size_bytes": entry["size_bytes"],
            "size_ratio": entry["size_bytes"] / len(reference_bytes),
            "latency_per_example_s": latency,
            "speedup": None if not latency else reference_latency / latency,
            "sparse_encoding_used": entry.get("sparse_encoding_used"),
            "test_accuracy": entry["test_accuracy"],
            "passed": entry["passed"],
            "runtime": entry.get("latency_runtime"),
        }

    # 1x1 vs 1x4 blocks at the level of 12 rounds (7.0%), on trained weights.
    files = {"dense": reference_bytes}
    block_info = {}
    for block in (1, 4):
        model, _ = trained_fc(trained_state, shape)
        kept = apply_lottery_masks(model, "fc", FC_LEVEL_7, w_final=w_final, block=block)
        plain = plain_twin(model)
        key = "1x1" if block == 1 else "1x4"
        files[key] = convert(plain, "tflite_sparse")
        block_info[key] = {"weights_remaining": kept, "size_bytes": len(files[key]),
                           "weight_storage": [r["storage"] for r in weight_storage(files[key])]}
    latencies = {key: float("inf") for key in files}
    for _ in range(repeats):  # interleaved; the best (lowest) median latency of each file
        for key, value in files.items():
            latency = latency_per_example(value, images, num_threads=1, repeats=3)
            latencies[key] = min(latencies[key], latency)
    blocks = {"dense_latency_per_example_s": latencies["dense"],
              "dense_size_bytes": len(reference_bytes)}
    for key in choices.MASK_BLOCKS:
        blocks[key] = {**block_info[key], "latency_per_example_s": latencies[key],
                       "speedup_vs_dense": latencies["dense"] / latencies[key]}
    return {
        "ticket_weights_remaining": fraction,
        "reference": {"what": "the dense trained fc, float LiteRT file (kind tflite)",
                      "size_bytes": len(reference_bytes),
                      "latency_per_example_s": reference_latency},
        "formats": formats,
        "keras_test_accuracy": report["keras_test_accuracy"],
        "blocks": blocks,
    }


# ---- the table ---------------------------------------------------------------------------
def _verdict(value, goal, at_most: bool = False, percent: bool = False) -> str:
    ok = value <= goal if at_most else value >= goal
    shown = f"{100 * goal:g}%" if percent else f"{goal}"
    return f"{'ok' if ok else 'MISSED'} ({'<=' if at_most else '>='} {shown})"


REFERENCE_LABELS = {
    "cli_lottery_round": "tf_lth CLI: lottery round 1 (masked, 80% kept), results.json",
    "our_loop_masked": "tf_lth Trainer.fit in this process, masked (diagnostic)",
    "our_loop_plain": "tf_lth Trainer.fit in this process, stock layers (diagnostic)",
    "keras_fit_xla": "Keras model.fit(jit_compile=True, steps_per_execution=100)",
    "tf_function_loop": "plain Keras, one tf.function step per batch (tf.data)",
    "torch_eager_masked": "PyTorch eager, mask re-applied after each step",
}


def table(results: dict) -> str:
    """The printed table: the fc comparison, then one row per other measurement."""
    fc = results["fc"]
    lines = _table_header(results) + _fc_table(fc)
    lines += ["| measurement | value | reference (same process) | ratio | target |",
              "| --- | --- | --- | --- | --- |"]
    from bench.sparse import rows as sparse_rows

    rows = (_flops_rows(results["flops"], fc["ours"]) + _loop_rows(results)
            + _export_rows(results["export"]) + sparse_rows(results["sparse"]))
    lines += [_row(*cells) for cells in rows]
    return "\n".join(lines)


def _row(what, value, reference, ratio, target="") -> str:
    return f"| {what} | {value} | {reference} | {ratio} | {target} |"


def _table_header(results: dict) -> list:
    """The title line, and a warning when the machine was busy."""
    lines = [f"tf_lth benchmark ({results['machine']}; {results['data']}; "
             f"{results['seconds']:.0f} s). Each figure is the mean of measurements "
             "alternated in one process; ratios are ours over the reference.", ""]
    load = results.get("load_average")
    if load and max(load) > results.get("cpu_count", 1):
        lines.append(f"WARNING: the machine was busy (load average {load[0]:.1f} at the start, "
                     f"{load[1]:.1f} at the end, on {results['cpu_count']} cores); the "
                     "alternation spreads that load, but absolute figures are low.")
        lines.append("")
    return lines


def _fc_table(fc: dict) -> list:
    """fc training rates: ours against each reference (targets when ours is the CLI)."""
    ours = fc["ours"]
    lines = [f"fc 784-300-100-10, batch {fc['batch_size']}, Adam, "
             f"{fc['examples_per_measurement']:,} examples per measurement",
             "", "| training | examples/s (mean) | samples | ours / this | target |",
             "| --- | --- | --- | --- | --- |"]
    goals = {"keras_fit_xla": TARGETS["cli_vs_keras_fit_xla"],
             "torch_eager_masked": TARGETS["cli_vs_torch_eager_masked"]}
    for name, entry in fc["rates"].items():
        ratio = fc["ratios_of_ours"][name]
        target = _verdict(ratio, goals[name]) if name in goals and ours == "cli_lottery_round" \
            else ""
        lines.append(f"| {REFERENCE_LABELS[name]} | {entry['examples_per_second']:,.0f} | "
                     f"{', '.join(f'{x:,.0f}' for x in entry['samples'])} | "
                     f"{'(ours)' if name == ours else f'{ratio:.2f}x'} | {target} |")
    for name, why in fc["skipped"].items():
        lines.append(f"| {REFERENCE_LABELS[name]} | skipped: {why} | | | |")
    lines += ["", f"Diagnostic (the old bench's ratio): masked / stock layers in our loop = "
              f"{fc['diagnostic_masked_vs_plain_our_loop']:.2f}", ""]
    return lines


def _flops_rows(flops: dict, ours: str) -> list:
    """FLOP utilisation of the fc step against a large matmul on this machine."""
    rows = [(f"fc step FLOP utilisation ({REFERENCE_LABELS[ours]})",
             f"{flops['fc_gflops']:.1f} GFLOP/s",
             f"{flops['matmul_n']}^3 matmul, {flops['matmul_gflops']:.1f} GFLOP/s",
             f"{100 * flops['utilisation']:.1f}%",
             _verdict(flops["utilisation"], TARGETS["fc_flop_utilisation"], percent=True)),
            ("fc-shaped matmul alone (60x784 @ 784x300)",
             f"{flops['fc_matmul_b60_gflops']:.1f} GFLOP/s", "the same matmul",
             f"{100 * flops['fc_matmul_b60_gflops'] / flops['matmul_gflops']:.1f}%")]
    if "fc_step_dots_seconds" in flops:
        dots = flops["fc_step_dots_seconds"]
        dots_gflops = 60 * FC_TRAIN_FLOPS / dots / 1e9
        rows.append(("the fc step's 8 matmuls alone (XLA loop, b60)",
                     f"{1e3 * dots:.3f} ms/step, {dots_gflops:.1f} GFLOP/s",
                     f"the whole step, {1e3 * flops['fc_step_seconds']:.3f} ms",
                     f"{100 * dots_gflops / flops['matmul_gflops']:.1f}% of the matmul peak; "
                     f"{100 * dots / flops['fc_step_seconds']:.0f}% of the step"))
    return rows


def _loop_rows(results: dict) -> list:
    """Supermask, conv2, evaluation, between-rounds and sweep rows."""
    sm, conv, ev = results["supermask"], results["conv2"], results["evaluation"]
    over, sweep = results["between_rounds"], results["untrained_sweep"]
    dense = sm["rates"]["dense_adam"]["examples_per_second"]
    return [
        (f"learned supermask round, fc b{sm['batch_size']} (SGD)",
         f"{sm['rates']['supermask_sgd']['examples_per_second']:,.0f} ex/s",
         f"dense round, our loop: Adam {dense:,.0f} / SGD "
         f"{sm['rates']['dense_sgd']['examples_per_second']:,.0f} ex/s",
         f"{sm['ratio_vs_dense_adam']:.2f}x / {sm['ratio_vs_dense_sgd']:.2f}x",
         _verdict(min(sm["ratio_vs_dense_adam"], sm["ratio_vs_dense_sgd"]),
                  TARGETS["supermask_vs_dense"])),
        (f"conv2 b{conv['batch_size']}, synthetic 32x32x3, our loop (masked)",
         f"{conv['rates']['our_loop_masked']['examples_per_second']:,.0f} ex/s",
         f"{REFERENCE_LABELS['keras_fit_xla']}, stock conv2: "
         f"{conv['rates']['keras_fit_xla']['examples_per_second']:,.0f} ex/s",
         f"{conv['ratio']:.2f}x", _verdict(conv["ratio"], TARGETS["conv2_vs_keras_fit_xla"])),
        (f"fc round, {ev['iterations']} iterations, --eval_every=100 ({ev['evaluations']} "
         f"evaluations of {ev['validation_examples']:,} + {ev['test_examples']:,} examples)",
         f"{ev['seconds']['eval_every_100']:.2f} s",
         f"evaluation only at the end: {ev['seconds']['eval_at_end']:.2f} s",
         f"{ev['ratio']:.2f}x time", _verdict(ev["ratio"], TARGETS["eval_every_100_max_ratio"],
                                              at_most=True)),
        ("lottery, between rounds (end of training to start of the next round's)",
         f"{over['seconds']:.2f} s",
         f"one epoch of the CLI round ({over['epoch_seconds']:.2f} s)",
         f"{over['ratio']:.3f} epochs"),
        (f"untrained supermask sweep: {sweep['criteria']} criteria x {sweep['levels']} levels x "
         f"{sweep['treatments']} treatments = {sweep['evaluations']} evaluations "
         f"({sweep['data']})",
         f"{sweep['seconds']:.1f} s", f"evaluation-only floor ({sweep['floor_seconds']:.1f} s)",
         f"{sweep['seconds'] / sweep['floor_seconds']:.2f}x the floor",
         _verdict(sweep["seconds"], TARGETS["sweep_max_seconds"], at_most=True)
         if sweep["levels"] == 25 else ""),
    ]


def _export_rows(export: dict) -> list:
    """Export sizes and latencies per format; the 1x1 and 1x4 tickets' LiteRT latency."""
    ref = export["reference"]
    rows = [("export reference: dense fc, float LiteRT file",
             f"{ref['size_bytes'] / 1024:.0f} KiB, "
             f"{1e6 * ref['latency_per_example_s']:.1f} us/example", "itself", "1.00x")]
    for name, entry in export["formats"].items():
        latency = entry["latency_per_example_s"]
        lat = "-" if latency is None else f"{1e6 * latency:.1f} us/example"
        encoded = ", sparse-encoded" if entry.get("sparse_encoding_used") else ""
        runtime = "TF" if name == "saved_model" else "LiteRT"
        rows.append((f"export {name} ({runtime}), fc ticket "
                     f"{100 * export['ticket_weights_remaining']:.1f}% kept{encoded}",
                     f"{entry['size_bytes'] / 1024:.0f} KiB, {lat}", "dense float LiteRT",
                     f"size {entry['size_ratio']:.2f}x, speed {_fmt_ratio(entry['speedup'])}"))
    blocks = export["blocks"]
    goal = TARGETS["block_1x4_speedup"]
    for key in choices.MASK_BLOCKS:
        entry = blocks[key]
        speedup = entry["speedup_vs_dense"]
        if key == "1x4":
            target = _verdict(speedup, goal)
        else:
            target = f"{'ok' if speedup < goal else 'MISSED'} (not >= {goal})"
        rows.append((f"LiteRT, 1 thread: fc ticket {key} blocks, "
                     f"{100 * entry['weights_remaining']:.1f}% kept, tflite_sparse (weights "
                     f"held {'/'.join(entry['weight_storage'])})",
                     f"{1e6 * entry['latency_per_example_s']:.1f} us/example",
                     f"dense float LiteRT ({1e6 * blocks['dense_latency_per_example_s']:.1f} us)",
                     f"{speedup:.2f}x speed", target))
    return rows


def _fmt_ratio(value) -> str:
    return "-" if value is None else f"{value:.2f}x"


# ---- main --------------------------------------------------------------------------------
SECTIONS = ("fc", "supermask", "conv2", "evaluation", "rounds", "sweep", "export", "sparse")
RESULT_KEYS = ("fc", "flops", "supermask", "conv2", "evaluation", "between_rounds",
               "untrained_sweep", "export", "sparse")


def parse_arguments(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results.json"))
    parser.add_argument("--quick", action="store_true",
                        help="shorter measurements (a smoke run of the benchmark)")
    parser.add_argument("--repeats", type=int, default=None,
                        help="alternated repeats per measurement (default 3, quick 1)")
    parser.add_argument("--only", default="",
                        help="comma-separated sections to run: fc, supermask, conv2, "
                             "evaluation, rounds, sweep, export, sparse (default: all)")
    return parser.parse_args(argv)


def machine_description() -> str:
    import keras
    import tensorflow as tf

    return (f"{platform.machine()}, {os.cpu_count()} CPU cores, TensorFlow "
            f"{tf.__version__}, Keras {keras.__version__}, "
            f"{'GPU' if tf.config.list_physical_devices('GPU') else 'no GPU'}")


def flop_figures(fc: dict) -> dict:
    """The fc round's FLOP rate against a 1024^3 matmul, and the step's matmuls alone."""
    n = 1024
    peak = matmul_gflops(n, n, n)
    ours = fc["rates"][fc["ours"]]["examples_per_second"]
    return {"matmul_n": n, "matmul_gflops": peak,
            "fc_matmul_b60_gflops": matmul_gflops(60, 300, 784, inner=200),
            "fc_train_flops_per_example": FC_TRAIN_FLOPS,
            "fc_gflops": ours * FC_TRAIN_FLOPS / 1e9,
            "utilisation": ours * FC_TRAIN_FLOPS / 1e9 / peak,
            "fc_step_seconds": 60 / ours,
            "fc_step_dots_seconds": fc_step_dots_seconds()}


def measure_loops(results: dict, sections: set, data, data_dir, repeats: int,
                  quick: bool) -> None:
    """Sections fc (with its FLOP figures), supermask, conv2 and evaluation, into results."""
    if "fc" in sections:
        log(f"fc, batch 60: CLI and our loop against model.fit (XLA), a tf.function loop "
            f"and PyTorch eager, {repeats} alternated repeats")
        results["fc"] = fc_against_references(data, data_dir, repeats, quick)
        log("matmul GFLOP/s")
        results["flops"] = flop_figures(results["fc"])
    if "supermask" in sections:
        log("learned supermask against dense, batch 250, our loop")
        results["supermask"] = supermask_against_dense(data, repeats, quick)
    if "conv2" in sections:
        log("conv2, batch 60, synthetic 32x32x3: our loop against model.fit (XLA)")
        results["conv2"] = conv2_against_keras_fit(repeats, quick)
    if "evaluation" in sections:
        log("evaluation every 100 iterations against evaluation at the end")
        results["evaluation"] = evaluation_cost(data, repeats, quick)
    if "sparse" in sections:
        from bench.sparse import sparse_training_cost

        log("sparse training through the CLI: native gradual vs the tfmot subprocess; RigL, "
            "SET, static vs dense")
        results["sparse"] = sparse_training_cost(data_dir, repeats, quick, alternate)


def measure_between_rounds(results: dict, previous: dict, data, iterations: int,
                           folder: str) -> str:
    """The between-rounds figures into results; returns the lottery run's directory."""
    log(f"between lottery rounds (fc, {iterations} iterations per round, 3 rounds)")
    over = between_rounds(data, iterations, os.path.join(folder, "lottery"))
    fc = results.get("fc") or previous.get("fc")
    rate = fc["rates"][fc["ours"]]["examples_per_second"] if fc else 50000.0
    epoch_seconds = data.steps_per_epoch(60) * 60 / rate
    results["between_rounds"] = {
        "seconds": over["seconds"], "gaps_seconds": over["gaps_seconds"],
        "epoch_seconds": epoch_seconds, "ratio": over["seconds"] / epoch_seconds,
        "what": "from the return of Trainer.fit of round r to the call of Trainer.fit "
                "of round r+1: round files, results.json, masks, actions, optimizer "
                "reset",
    }
    return over["run_dir"]


def measure_sweep(data, data_note: str, source: str, folder: str, iterations: int,
                  quick: bool) -> dict:
    """The untrained-supermask sweep from `source` against its evaluation-only floor."""
    levels = list(range(0, 25, 6)) if quick else list(range(25))
    log(f"untrained supermask sweep ({len(levels)} levels)")
    sweep = untrained_sweep(data, source, os.path.join(folder, "sweep"), levels)
    one_eval = eval_seconds(masked_model("fc", data.image_shape), data)
    best_lfss = max((r for r in sweep["records"] if r["criterion"] == "large_final_same_sign"),
                    key=lambda r: r["test_accuracy"])
    return {
        "seconds": sweep["seconds"], "evaluations": sweep["evaluations"],
        "criteria": sweep["criteria"], "levels": sweep["levels"],
        "treatments": sweep["treatments"], "data": data_note.split(" (")[0],
        "one_evaluation_seconds": one_eval,
        "floor_seconds": one_eval * sweep["evaluations"],
        "note": f"source: dense fc trained {iterations} iterations; best "
                f"large_final_same_sign: {100 * best_lfss['test_accuracy']:.1f}% "
                f"({best_lfss['weight_treatment']}, level {best_lfss['prune_level']})",
    }


def measure_runs(results: dict, previous: dict, sections: set, data, data_note: str,
                 repeats: int, quick: bool) -> None:
    """Sections rounds, sweep and export (which need a trained lottery run), into results."""
    if not sections & {"rounds", "sweep", "export"}:
        return
    with tempfile.TemporaryDirectory(prefix="tf_lth-bench-") as folder:
        iterations = 100 if quick else 300
        source = measure_between_rounds(results, previous, data, iterations, folder)
        if "sweep" in sections:
            results["untrained_sweep"] = measure_sweep(data, data_note, source, folder,
                                                       iterations, quick)
        if "export" in sections:
            log("export sizes and LiteRT latency; 1x1 vs 1x4 tickets")
            from tf_lth.core import run_files

            round0 = run_files.round_dir(source, 0)
            results["export"] = export_figures(data, os.path.join(round0, "final.npz"),
                                               folder, repeats)


def keep_previous(results: dict, previous: dict) -> None:
    """Sections not run this time keep their figures from the last results.json."""
    for key in RESULT_KEYS:
        if key not in results and key in previous:
            results[key] = previous[key]
            results.setdefault("kept_from_previous_run", []).append(key)


def main(argv=None) -> int:
    arguments = parse_arguments(argv)
    repeats = arguments.repeats or (1 if arguments.quick else 3)
    sections = set(filter(None, arguments.only.split(","))) or set(SECTIONS)

    import absl.logging
    import keras

    absl.logging.set_verbosity(absl.logging.ERROR)
    keras.utils.set_random_seed(0)
    started = time.perf_counter()
    load_start = os.getloadavg()[0]
    data, data_note = load_mnist()
    data_dir = os.environ.get("TFDS_DATA_DIR") if data_note.startswith("real") else None
    log(f"data: {data_note}")
    results = {
        "machine": machine_description(),
        "data": data_note,
        "repeats": repeats,
        "method": "measurements alternated in one process; mean examples/s of each",
    }
    previous = {}
    if os.path.exists(arguments.out):  # sections not run this time keep their last figures
        with open(arguments.out, encoding="utf-8") as stream:
            previous = json.load(stream)
    measure_loops(results, sections, data, data_dir, repeats, arguments.quick)
    measure_runs(results, previous, sections, data, data_note, repeats, arguments.quick)
    keep_previous(results, previous)
    results["seconds"] = time.perf_counter() - started
    results["cpu_count"] = os.cpu_count()
    results["load_average"] = [load_start, os.getloadavg()[0]]
    missing = [key for key in RESULT_KEYS if key not in results]
    text = table(results) if not missing else f"(no table: sections never run: {missing})"
    results["table"] = text
    from tf_lth.core import run_files

    run_files.write_json(arguments.out, results)
    print()
    print(text)
    print(f"\nwritten: {arguments.out}")
    return 0


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
