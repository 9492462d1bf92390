"""Settings and their allowed names are declared once (issue 22, item 3).

Names: every fixed set of names lives in `tf_lth.core.choices`; no other module of the project
(tests aside) writes one of those sets out again as a literal, in any order (read with
`ast`). Settings: every `Config` field declares its help, default, allowed names and run
identity (`tf_lth.core.config.setting`); the absl flags and `RUN_IDENTITY` are made from the
fields, and the preset defaults resolve to the values docs/semantics.md gives.
"""

import ast
import dataclasses
import os
import sys

import pytest

from tf_lth.core import actions, choices, masks
from tf_lth.core import config as config_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCE_FOLDERS = ("tf_lth", "trainers", "export", "bench", "examples")
REGISTRIES = {name: value for name, value in vars(choices).items()
              if name.isupper() and isinstance(value, tuple)}
# Registries of names; a tuple of numbers such as BLOCK_SIZES' (1, 4) is also a shape.
NAMED = {name: value for name, value in REGISTRIES.items()
         if all(isinstance(item, str) for item in value)}
# The flags whose change makes a resumed run a different run, as before issue 22: old run
# directories resume only if this list is unchanged (tf_lth/core/run_files.py compares them).
IDENTITY = {
    "experiment", "dataset", "arch", "epochs", "iterations", "batch_size", "optimizer",
    "learning_rate", "momentum", "seed", "criterion", "rounds", "prune_rates", "one_shot",
    "rewind_iteration", "mask_one_action", "mask_zero_action", "mask_block", "prune_scope",
    "validation_size", "supermask_weights", "sigmoid_bias", "constant_multiplier",
    "mask_sampling", "keep_fraction", "lr_schedule", "weight_decay", "controls",
    "dynamic_scaling", "prune_levels", "weight_treatments", "source_run", "eval_every",
    # sparse training (gradual, dynamic_sparse): new flags, whose defaults old runs had
    "initial_sparsity", "final_sparsity", "begin_step", "end_step", "pruning_frequency",
    "pruning_power", "sparse_method", "sparsity_distribution", "update_every",
    "drop_fraction", "update_end_step",
}


def _source_files() -> list:
    found = []
    for folder in SOURCE_FOLDERS:
        for directory, _, files in os.walk(os.path.join(ROOT, folder)):
            found += [os.path.relpath(os.path.join(directory, name), ROOT)
                      for name in files if name.endswith(".py")]
    return sorted(path for path in found if path != os.path.join("tf_lth", "core", "choices.py"))


def _copies(source: str) -> list:
    """(line, registry name) for each tuple, list or set literal of constants in `source`
    holding the same names as a `tf_lth.core.choices` registry of names (in any order)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.Tuple, ast.List, ast.Set)) or len(node.elts) < 2:
            continue
        if not all(isinstance(item, ast.Constant) for item in node.elts):
            continue
        items = tuple(item.value for item in node.elts)
        for name, registry in NAMED.items():
            if len(items) == len(registry) and set(items) == set(registry):
                found.append((node.lineno, name))
    return found


def test_the_copy_finder_sees_a_reordered_copy_and_ignores_other_literals():
    source = ('MODES = ("sample", "expected")\n'
              'def f(x):\n    return x in ["layer", "global"]\n'
              'PAIR = ("expected", "other")\nSUBSET = ("snip",)\nKEY = ("init", 1)\n'
              'SHAPE = (1, 4)\n')
    assert _copies(source) == [(1, "SUPERMASK_EXPORTS"), (3, "PRUNE_SCOPES")]


@pytest.mark.parametrize("path", _source_files())
def test_no_module_writes_out_a_registry_of_tf_lth_choices_again(path):
    with open(os.path.join(ROOT, path), encoding="utf-8") as stream:
        copies = _copies(stream.read())
    assert not copies, [f"{path}:{line}: import tf_lth.core.choices.{name}" for line, name in copies]


def test_choices_imports_only_the_standard_library():
    with open(os.path.join(ROOT, "tf_lth", "core", "choices.py"), encoding="utf-8") as stream:
        tree = ast.parse(stream.read())
    imported = {alias.name.split(".")[0] for node in ast.walk(tree)
                if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module.split(".")[0] for node in ast.walk(tree)
                 if isinstance(node, ast.ImportFrom) and node.module}
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}, imported


def test_registries_hold_distinct_names_and_the_old_names_still_import():
    for name, registry in REGISTRIES.items():
        assert len(set(registry)) == len(registry), name
    assert masks.CRITERIA is choices.CRITERIA and masks.INIT_CRITERIA is choices.INIT_CRITERIA
    assert masks.GRADIENT_CRITERIA == ("snip", "grad")
    assert masks.BLOCK_SIZES == (1, 4) and choices.MASK_BLOCKS == ("1x1", "1x4")
    assert actions.MASK_ONE_ACTIONS is choices.MASK_ONE_ACTIONS
    assert actions.MASK_ZERO_ACTIONS is choices.MASK_ZERO_ACTIONS
    assert set(choices.TUNABLE_EXPERIMENTS) < set(choices.EXPERIMENTS)
    assert set(choices.INIT_CRITERIA) | {"large_final", "small_final", "random", "grad"} == \
        set(choices.CRITERIA)


# ---- settings --------------------------------------------------------------------------
FIELDS = dataclasses.fields(config_lib.Config)


@pytest.mark.parametrize("field", FIELDS, ids=[field.name for field in FIELDS])
def test_every_setting_declares_help_default_choices_and_identity(field):
    metadata = field.metadata
    assert isinstance(metadata.get("help"), str) and len(metadata["help"]) > 10
    assert isinstance(metadata.get("identity"), bool)
    assert field.default is not dataclasses.MISSING
    assert field.default_factory is dataclasses.MISSING
    allowed = metadata.get("choices")
    assert allowed == () or any(allowed is registry for registry in REGISTRIES.values())
    if allowed and field.default is not None:  # the declared default is allowed
        values = field.default if isinstance(field.default, tuple) else (field.default,)
        assert set(values) <= set(allowed)
    if metadata.get("preset"):  # None (or nothing given): "the preset's value"
        assert field.default in (None, ())


def test_run_identity_is_the_same_list_of_flags_as_before():
    assert set(config_lib.RUN_IDENTITY) == IDENTITY
    assert len(config_lib.RUN_IDENTITY) == len(IDENTITY)


def _tf_lth_flags():
    from tf_lth.cli import flags as tf_lth_flags

    tf_lth_flags.define_flags()
    return tf_lth_flags


def test_every_tf_lth_flag_comes_from_a_config_field():
    tf_lth_flags = _tf_lth_flags()
    defined = {flag.name for flag in tf_lth_flags.FLAGS.flags_by_module_dict()["tf_lth.cli.flags"]}
    assert defined == {field.name for field in FIELDS}
    assert tf_lth_flags.names() == tuple(field.name for field in FIELDS)


@pytest.mark.parametrize("field", FIELDS, ids=[field.name for field in FIELDS])
def test_each_flag_has_its_fields_default_type_help_and_allowed_names(field):
    flag = _tf_lth_flags().FLAGS[field.name]
    if isinstance(field.default, tuple):  # a comma-separated list on the command line
        assert flag.default == ",".join(map(str, field.default))
    else:
        assert flag.default == field.default
    kinds = {str: "string", tuple: "string", int: "int", float: "float", bool: "bool"}
    assert flag.flag_type() == kinds[config_lib.value_type(field)]
    assert field.metadata["help"] in flag.help
    assert all(name in flag.help for name in field.metadata["choices"])


@pytest.mark.parametrize("field", [field for field in FIELDS if field.metadata["choices"]],
                         ids=lambda field: field.name)
def test_a_name_outside_a_settings_choices_is_refused_naming_the_flag(field):
    listed = isinstance(field.default, tuple) or field.metadata["listed"]
    value = f"{field.metadata['choices'][0]},no_such_name" if listed else "no_such_name"
    values = dict(run_dir="x", experiment="lottery", criterion="large_final")
    if field.name == "criterion":
        values["experiment"] = "untrained_supermask"  # the one experiment taking a list
    values[field.name] = value
    with pytest.raises(config_lib.ConfigError) as raised:
        config_lib.make(**values)
    message = str(raised.value)
    assert message.startswith(f"--{field.name}=") and "'no_such_name' is not allowed" in message
    assert all(name in message for name in field.metadata["choices"])


def test_preset_settings_resolve_to_the_papers_values():
    """docs/semantics.md, Training and Supermasks: Adam, batch 60, fc 1.2e-3 for 55 epochs,
    conv4 3e-4 for 34; learned supermasks SGD, momentum 0.9, learning rate 100, batch 250."""
    dense = config_lib.make(run_dir="x")
    assert (dense.optimizer, dense.batch_size, dense.momentum) == ("adam", 60, 0.9)
    assert (dense.learning_rate, dense.epochs) == (1.2e-3, 55)
    assert dense.rates == {"conv": 0.0, "dense": 0.2, "output": 0.1}
    learned = config_lib.make(run_dir="x", experiment="learned_supermask", arch="conv4")
    assert (learned.optimizer, learned.batch_size, learned.momentum) == ("sgd", 250, 0.9)
    assert (learned.learning_rate, learned.epochs) == (100.0, 34)
    given = config_lib.make(run_dir="x", experiment="learned_supermask", batch_size=32,
                            optimizer="adam", iterations=7, prune_rates="dense=0.5")
    assert (given.batch_size, given.optimizer, given.epochs) == (32, "adam", None)
    assert given.rates == {"conv": 0.0, "dense": 0.5, "output": 0.1}


def test_a_preset_flags_help_names_the_values_it_resolves_to():
    flags = _tf_lth_flags().FLAGS
    for arch in choices.ARCHS:
        resolved = config_lib.make(run_dir="x", arch=arch)
        assert f"{arch} {resolved.learning_rate}" in flags["learning_rate"].help
        assert f"{arch} {resolved.epochs}" in flags["epochs"].help
        for group, rate in resolved.rates.items():
            assert f"{group}={rate}" in flags["prune_rates"].help
    assert "60; 250 for learned supermasks" in flags["batch_size"].help
    assert "adam; sgd for learned supermasks" in flags["optimizer"].help
    assert "100.0 for learned supermasks" in flags["learning_rate"].help


def test_flagfile_lines_leave_out_unset_values_and_how_the_run_starts():
    tf_lth_flags = _tf_lth_flags()
    lines = tf_lth_flags.flagfile_lines({"arch": "conv2", "epochs": None, "resume": True,
                                         "overwrite": False, "progress": False, "seed": 3})
    assert lines == ["--arch=conv2", "--seed=3", "--noprogress"]


def test_a_resolved_config_json_compares_equal_on_resume(tmp_path):
    """What --resume compares: the identity flags of config.json against the new run's."""
    import json

    from tf_lth.core import run_files

    config = config_lib.make(experiment="lottery", dataset="synthetic_mnist", rounds=2,
                             run_dir=str(tmp_path), resume=True, controls="random")
    (tmp_path / "config.json").write_text(json.dumps(config_lib.to_dict(config)))
    assert run_files.check_run_dir(config) is True
    other = config_lib.make(experiment="lottery", dataset="synthetic_mnist", rounds=2,
                            run_dir=str(tmp_path), resume=True, controls="random", momentum=0.5)
    with pytest.raises(config_lib.ConfigError, match="--momentum=0.5 differs"):
        run_files.check_run_dir(other)


@pytest.mark.parametrize("options", [
    dict(experiment="untrained_supermask", criterion="large_final,random", prune_levels="1,3",
         weight_treatments="init,rescaled"),
    dict(experiment="lottery", arch="conv4", controls="reinit,random", export="tflite,saved_model",
         prune_rates="dense=0.3"),
])
def test_a_config_json_makes_the_same_config_again(options):
    """`tf_lth.export` rebuilds a run's Config from config.json: lists, a rates dict."""
    import json

    config = config_lib.make(run_dir="x", **options)
    stored = json.loads(json.dumps(config_lib.to_dict(config)))
    stored["prune_rates"] = ",".join(f"{group}={rate}"
                                     for group, rate in stored["prune_rates"].items())
    assert config_lib.make(**stored) == config
