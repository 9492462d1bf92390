"""tf_lth's absl flags (docs/architecture.md, Data flow of a lottery run) and their conversion into a `Config`.

CLI layer. Shared by `tf_lth.train` and `tf_lth.tune`. Bad flags print one line and exit 2.
"""

from __future__ import annotations

import os
import sys

from absl import flags

from tf_lth import config as config_lib

FLAGS = flags.FLAGS
_DEFINED = []


def _define(kind, name, default, help_text, **kwargs):
    getattr(flags, f"DEFINE_{kind}")(name, default, help_text, **kwargs)
    _DEFINED.append(name)


def define_flags() -> None:
    if _DEFINED:
        return
    _define("string", "experiment", "dense", "dense, lottery, untrained_supermask, "
            "learned_supermask or tfmot_baseline.")
    _define("string", "dataset", "mnist", "A tfds image classification dataset "
            "(mnist, fashion_mnist, cifar10, ...), or synthetic / synthetic_mnist.")
    _define("string", "data_dir", None, "Where tfds data is prepared (default: TFDS_DATA_DIR "
            "or ~/tensorflow_datasets).")
    _define("integer", "validation_size", None, "Validation examples carved from the end of "
            "train (default 5000).")
    _define("string", "arch", "fc", "fc, conv2, conv4 or conv6 (docs/semantics.md, Networks).")
    _define("float", "epochs", None, "Epochs per round (default: the arch's paper preset).")
    _define("integer", "iterations", None, "Iterations per round; overrides --epochs.")
    _define("integer", "batch_size", None, "Training batch size (default 60; 250 for "
            "learned supermasks).")
    _define("string", "optimizer", None, "adam, sgd or rmsprop (default adam; sgd for "
            "learned supermasks).")
    _define("float", "learning_rate", None, "Learning rate (default: the arch's preset).")
    _define("float", "momentum", None, "Momentum for sgd (default 0.9).")
    _define("integer", "eval_every", 100, "Iterations between evaluations (and at the end).")
    _define("integer", "seed", 0, "Seed of initialisation, data order and masks.")
    _define("boolean", "deterministic", False, "TensorFlow op determinism: bitwise repeatable.")
    _define("string", "run_dir", None, "The run directory (required).")
    _define("boolean", "resume", False, "Continue the run in --run_dir.")
    _define("boolean", "overwrite", False, "Replace the run in --run_dir.")
    _define("string", "criterion", "large_final", "Mask criterion (docs/semantics.md, Mask criteria); a "
            "comma-separated list for untrained_supermask.")
    _define("integer", "rounds", 0, "Pruning rounds after the dense round 0.")
    _define("string", "prune_rates", "", "Per-group rates, e.g. conv=0.1,dense=0.2,output=0.1 "
            "(default: the arch's preset).")
    _define("boolean", "one_shot", False, "Prune straight to the level of --rounds.")
    _define("integer", "rewind_iteration", 0, "Reset to the weights of this iteration of "
            "round 0 (late resetting); 0 resets to the initial weights.")
    _define("string", "mask_one_action", "none", "Starting values of kept weights "
            "(docs/semantics.md, Mask-1 actions).")
    _define("string", "mask_zero_action", "zero", "Values of pruned weights (docs/semantics.md, Mask-0 actions).")
    _define("string", "mask_block", "1x1", "Mask granularity: 1x1 (the paper) or 1x4 "
            "(LiteRT's sparse kernel blocks).")
    _define("string", "prune_scope", "layer", "layer: each layer prunes its own rate (the "
            "paper); global: one ranking across layers, pruning the same total per round.")
    _define("string", "source_run", None, "A finished dense run whose weights untrained "
            "supermasks use.")
    _define("string", "prune_levels", "", "Untrained supermask prune levels, as round counts "
            "(default 0..24).")
    _define("string", "weight_treatments", "init,signed_constant,rescaled",
            "Untrained supermask weight treatments.")
    _define("string", "supermask_weights", "init", "Learned supermask kernels: init or "
            "signed_constant.")
    _define("float", "sigmoid_bias", 0.0, "Initial mask logit (0 means p = 0.5).")
    _define("float", "constant_multiplier", 1.0, "Multiplier of the signed constant.")
    _define("string", "mask_sampling", "bernoulli", "bernoulli, round (the paper's variant) "
            "or topk (edge-popup: the top --keep_fraction of |score| per layer).")
    _define("float", "keep_fraction", 0.5, "Fraction of weights (or blocks) per layer that "
            "--mask_sampling=topk keeps.")
    _define("string", "lr_schedule", "constant", "constant or cosine (decay to 0 over the round).")
    _define("float", "weight_decay", 0.0, "Decoupled weight decay of the optimizer (0: none).")
    _define("string", "controls", "", "Lottery controls trained at every pruned round: a "
            "comma list of random (random mask, same per-layer counts) and reinit (the "
            "ticket's mask, fresh initialisation).")
    _define("boolean", "dynamic_scaling", False, "Rescale kernels by size / kept every step.")
    _define("integer", "eval_samples", 10, "Sampled masks averaged at evaluation.")
    _define("string", "supermask_export", "expected", "Mask a learned supermask exports: "
            "expected or sample.")
    _define("string", "strategy", "default", "default, mirrored, multi_worker or tpu.")
    _define("string", "export", "", "Formats exported at the end: saved_model, tflite, "
            "tflite_sparse, tflite_int8, tflite_sparse_int8.")
    _define("integer", "checkpoint_every", 0, "Iterations between in-round checkpoints "
            "(0: none).")
    _define("string", "jit_compile", "auto", "XLA for the training and evaluation calls: auto "
            "(XLA, else the plain graph, said once in the log), on or off.")
    _define("boolean", "download", True, "Let tfds download a missing dataset.")
    _define("boolean", "progress", True, "Show a progress bar on a terminal.")


def own_flags_text() -> str:
    """tf_lth's flags as a re-runnable flagfile (absl's dump holds every module's flags)."""
    lines = []
    for name in _DEFINED:
        flag = FLAGS[name]
        if flag.value is None or name in ("resume", "overwrite"):
            continue
        if isinstance(flag.value, bool):
            lines.append(f"--{name}" if flag.value else f"--no{name}")
        else:
            lines.append(f"--{name}={flag.value}")
    return "\n".join(lines) + "\n"


def to_config() -> config_lib.Config:
    values = {name: FLAGS[name].value for name in _DEFINED}
    values["run_dir"] = values["run_dir"] or ""
    return config_lib.make(**values)


def fail(message: str) -> None:
    """One line on stderr, exit status 2: the CLI's answer to bad input."""
    sys.stderr.write(f"error: {message}\n")
    sys.stderr.flush()
    os._exit(2) if os.environ.get("TF_LTH_HARD_EXIT") else sys.exit(2)


def parse_flags(argv):
    """absl's parser, but one line and exit status 2 on bad flags or flagfiles."""
    for argument in argv[1:]:
        if argument.startswith("--flagfile="):
            path = argument.split("=", 1)[1]
            if not os.path.isfile(path):
                fail(f"--flagfile={path!r}: no such file; allowed: a readable flagfile.")
    try:
        return FLAGS(argv)
    except flags.Error as error:
        message = str(error).splitlines()[0]
        if isinstance(error, flags.CantOpenFlagFileError):  # absl words it "ERROR:: ..."
            message = "--flagfile: " + message.replace("ERROR:: ", "", 1)
        fail(message)
    except (OSError, UnicodeDecodeError) as error:
        fail(f"--flagfile: cannot read ({error})")
