"""tf_lth: lottery tickets and supermasks for your own Keras 3 models.

The public API (docs/api.md). Names load lazily, so `import tf_lth` stays light and does
not import TensorFlow until one is used.

Masking and pruning:
    masked(model, layers=None, supermask=False, ...)   mask a model's kernels (any kind)
    prune(model, fraction, criterion="large_final", reference=None, scope="layer", ...)
    find_ticket(model, train_fn, rounds, rate, ...)      iterative pruning with rewinding
    RewindSnapshot(step)                                 late-resetting callback for fit
    Ticket                                               what find_ticket returns
State (masks are never weights):
    weights_state(model), rewind(model, state), get_masks(model), set_masks(model, masks)
    weights_remaining(model), summary(model), supermask_mode(model, "expected"|"sample")
Sparse training while fitting (docs/sparse_training.md):
    PolynomialDecay(...), ConstantSparsity(...)          tfmot's schedules, same arguments
    GradualPruning(schedule, scope="layer", block="1x1") gradual magnitude pruning in fit
    DynamicSparse(sparsity, method="rigl"|"set"|"static", distribution="erk"|"uniform")
Deployment:
    strip(model), export_saved_model(model, path), export_litert(model, path, ...),
    run_litert(path, inputs)
Modules: tf_lth.core.layers, tf_lth.core.masks, tf_lth.core.actions, tf_lth.core.models.
"""

from __future__ import annotations

import importlib

_API = {
    "masked": "tf_lth.core.wrap",
    "supermask_mode": "tf_lth.core.wrap",
    "summary": "tf_lth.core.wrap",
    "kernel_slots": "tf_lth.core.wrap",
    "prune": "tf_lth.core.ticket",
    "find_ticket": "tf_lth.core.ticket",
    "RewindSnapshot": "tf_lth.core.ticket",
    "Ticket": "tf_lth.core.ticket",
    "weights_state": "tf_lth.core.ticket",
    "rewind": "tf_lth.core.ticket",
    "get_masks": "tf_lth.core.ticket",
    "set_masks": "tf_lth.core.ticket",
    "weights_remaining": "tf_lth.core.ticket",
    "reset_optimizer_state": "tf_lth.core.ticket",
    "PolynomialDecay": "tf_lth.core.schedules",
    "ConstantSparsity": "tf_lth.core.schedules",
    "GradualPruning": "tf_lth.core.sparse_training",
    "DynamicSparse": "tf_lth.core.sparse_training",
    "strip": "tf_lth.api.deploy",
    "export_saved_model": "tf_lth.api.deploy",
    "export_litert": "tf_lth.api.deploy",
    "run_litert": "tf_lth.api.deploy",
}

__all__ = sorted(_API)


def __getattr__(name: str):
    if name in _API:
        value = getattr(importlib.import_module(_API[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'tf_lth' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_API))
