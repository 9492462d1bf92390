"""The bad-input table (issue 6, item 5): every case exits 2 with one clear line and changes
nothing on disk.

Each case runs the real CLI in a subprocess and checks: exit status 2; stderr's last
non-empty line starts with "error:" and names the flag (or file) to fix; it is the only
line on stderr apart from TensorFlow's own start-up chatter; no traceback; an existing run
directory (made once by a tiny real run) is unchanged, byte for byte and mtime for mtime;
and a fresh --run_dir given to the case is not created.

Two cases come from running on a cluster: a run directory another live process holds
(refused naming its pid, before TensorFlow loads) and a run directory on a full disk at
the start (a disk that fills during a run exits with status 3: tests/test_cluster.py).

Most cases are rejected before TensorFlow is imported (well under a second each). Cases
that need TensorFlow (tfds look-ups, a dataset's image shape, the export command) are
started together, once, by the `slow_results` fixture, so they overlap.

The flags of `--experiment=gradual` and `--experiment=dynamic_sparse` have their own table,
SPARSE: every case is parsed in this process as the CLI parses it (absl flags, then
`tf_lth.core.config.make`, then `gradual_window` for the round's length), and a few of them
(SPARSE_THROUGH_CLI, plus the two that need the data, in SLOW) also run the real CLI for
the exit-2, one-line, nothing-written contract.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys

import pytest

from tests.helpers import ROOT

BASE = ["--experiment=lottery", "--dataset=synthetic_mnist", "--iterations=4", "--eval_every=2",
        "--rounds=1", "--seed=0", "--noprogress"]
# TensorFlow / absl start-up lines that bypass TF_CPP_MIN_LOG_LEVEL (not ours).
NOISE_PREFIXES = ("WARNING: All log messages before absl::InitializeLog()",)


def _is_noise(line: str) -> bool:
    return line.startswith(NOISE_PREFIXES) or (
        len(line) > 5 and line[0] in "IWEF" and line[1:5].isdigit() and " " in line
    )


def _command(module, args):
    return [sys.executable, "-m", module, *args]


def _env():
    return dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=ROOT)


def snapshot(folder: str) -> dict:
    """Every path under `folder`: files by (sha256, size, mtime_ns), folders by name."""
    state = {}
    for parent, folders, files in os.walk(folder):
        for name in folders:
            state[os.path.relpath(os.path.join(parent, name), folder) + "/"] = "dir"
        for name in files:
            path = os.path.join(parent, name)
            with open(path, "rb") as stream:
                digest = hashlib.sha256(stream.read()).hexdigest()
            info = os.stat(path)
            state[os.path.relpath(path, folder)] = (digest, info.st_size, info.st_mtime_ns)
    return state


# ---- the run directories the cases point at --------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory, request):
    """An existing tiny run, its variants (one held by a live process), flagfiles, a tiny
    tfds dataset and a full filesystem (a filled 1 MiB tmpfs; None where mounting fails)."""
    root = tmp_path_factory.mktemp("bad_input")
    existing = str(root / "existing")
    process = subprocess.run(_command("tf_lth.train", BASE + [f"--run_dir={existing}"]),
                             cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=600)
    assert process.returncode == 0, process.stderr[-3000:]
    assert os.path.exists(os.path.join(existing, "round_001", "DONE"))

    no_weights = str(root / "source_without_weights")
    shutil.copytree(existing, no_weights)
    os.unlink(os.path.join(no_weights, "round_000", "final.npz"))
    no_round = str(root / "run_without_completed_round")
    shutil.copytree(existing, no_round)
    for index in (0, 1):
        os.unlink(os.path.join(no_round, f"round_{index:03d}", "DONE"))
    foreign = root / "not_a_run"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious\n")
    empty_data = root / "empty_tfds"
    empty_data.mkdir()
    locked = str(root / "locked_run")
    shutil.copytree(existing, locked)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import time; from tf_lth.core import run_lock; "
         f"run_lock.acquire({locked!r}); print('held', flush=True); time.sleep(3600)"],
        cwd=ROOT, env=_env(), stdout=subprocess.PIPE, text=True)
    request.addfinalizer(holder.kill)
    assert holder.stdout.readline().strip() == "held"
    full_disk = _full_tmpfs(str(root / "full_disk"), request)

    flagfiles = {}
    for name, payload in {
        "stray_line": b"--iterations=4\niterations=5\n",
        "bad_value": b"--rounds=abc\n",
        "not_utf8": b"\xff\xfe--rounds=1\n",
        "nested_missing": f"--flagfile={root}/no_such.flags\n".encode(),
        "two_flags_one_line": b"--iterations=4 --rounds=2\n",
    }.items():
        path = root / f"{name}.flags"
        path.write_bytes(payload)
        flagfiles[name] = str(path)
    return dict(root=str(root), existing=existing, no_weights=no_weights, no_round=no_round,
                foreign=str(foreign), empty_data=str(empty_data), flagfiles=flagfiles,
                locked=locked, holder_pid=holder.pid, full_disk=full_disk,
                fresh=str(root / "fresh" / "run"), tiny=_tiny_tfds(str(root / "tfds")))


def _full_tmpfs(mount_point: str, request):
    """A 1 MiB tmpfs at `mount_point` filled by a ballast file, or None where mounting is
    not permitted (the full-disk case is then skipped)."""
    os.makedirs(mount_point)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", mount_point],
                             capture_output=True)
    if mounted.returncode != 0:
        return None
    request.addfinalizer(lambda: subprocess.run(["umount", "-l", mount_point]))
    with open(os.path.join(mount_point, "ballast"), "wb", buffering=0) as stream:
        try:
            while True:
                stream.write(b"\0" * 65536)
        except OSError:
            pass  # full
    return mount_point


def _tiny_tfds(data_dir: str) -> str:
    """A prepared tfds dataset `tiny_images` of 4x4x1 images (too small for conv6)."""
    code = f"""
import numpy as np, tensorflow as tf, tensorflow_datasets as tfds
def split(n, seed):
    rng = np.random.default_rng(seed)
    return tf.data.Dataset.from_tensor_slices({{
        "image": rng.integers(0, 255, (n, 4, 4, 1)).astype(np.uint8),
        "label": rng.integers(0, 10, n).astype(np.int64)}})
tfds.dataset_builders.TfDataBuilder(
    name="tiny_images", version="1.0.0", data_dir={data_dir!r},
    split_datasets={{"train": split(64, 0), "test": split(16, 1)}},
    features=tfds.features.FeaturesDict({{
        "image": tfds.features.Image(shape=(4, 4, 1)),
        "label": tfds.features.ClassLabel(num_classes=10)}}),
).download_and_prepare()
"""
    return code  # run by slow_results while the other slow cases start


# ---- the table ---------------------------------------------------------------------------
# (id, kind, args, text the error line must contain). kind "resume": BASE + --resume on the
# existing run + args (only the bad flag differs from the run's own); "fresh": BASE on a
# fresh --run_dir + args; "raw": args only (plus a fresh --run_dir); "export": the export CLI.
FAST = [
    ("unknown_criterion", "resume", ["--criterion=largest_ever"], "--criterion"),
    ("unknown_criterion_in_list", "fresh",
     ["--experiment=untrained_supermask", "--criterion=large_final,bogus"], "--criterion"),
    ("unknown_mask_one_action", "resume", ["--mask_one_action=bogus"], "--mask_one_action"),
    ("unknown_mask_zero_action", "resume", ["--mask_zero_action=bogus"], "--mask_zero_action"),
    ("prune_rate_one", "resume", ["--prune_rates=dense=1.0"], "--prune_rates"),
    ("prune_rate_above_one", "resume", ["--prune_rates=output=1.5"], "--prune_rates"),
    ("prune_rate_negative", "resume", ["--prune_rates=dense=-0.1"], "--prune_rates"),
    ("prune_rate_not_a_number", "resume", ["--prune_rates=dense=abc"], "--prune_rates"),
    ("prune_rate_unknown_group", "resume", ["--prune_rates=attention=0.2"], "--prune_rates"),
    ("negative_rounds", "resume", ["--rounds=-1"], "--rounds"),
    ("rewind_at_training_length", "resume", ["--rewind_iteration=4"], "--rewind_iteration"),
    ("rewind_beyond_training_length", "resume", ["--rewind_iteration=400"],
     "--rewind_iteration"),
    ("negative_rewind", "resume", ["--rewind_iteration=-1"], "--rewind_iteration"),
    ("unknown_arch", "resume", ["--arch=resnet50"], "--arch"),
    ("unknown_optimizer", "resume", ["--optimizer=lbfgs"], "--optimizer"),
    ("unknown_experiment", "resume", ["--experiment=distillation"], "--experiment"),
    ("unknown_strategy", "resume", ["--strategy=horovod"], "--strategy"),
    ("zero_batch_size", "resume", ["--batch_size=0"], "--batch_size"),
    ("negative_batch_size", "resume", ["--batch_size=-60"], "--batch_size"),
    ("zero_learning_rate", "resume", ["--learning_rate=0"], "--learning_rate"),
    ("negative_learning_rate", "resume", ["--learning_rate=-0.1"], "--learning_rate"),
    ("nan_learning_rate", "resume", ["--learning_rate=nan"], "--learning_rate"),
    ("infinite_learning_rate", "resume", ["--learning_rate=inf"], "--learning_rate"),
    ("zero_epochs", "resume", ["--epochs=0"], "--epochs"),
    ("negative_epochs", "resume", ["--epochs=-2"], "--epochs"),
    ("zero_iterations", "resume", ["--iterations=0"], "--iterations"),
    ("zero_eval_every", "resume", ["--eval_every=0"], "--eval_every"),
    ("negative_checkpoint_every", "resume", ["--checkpoint_every=-5"], "--checkpoint_every"),
    ("unknown_synthetic_dataset", "fresh", ["--dataset=synthetic_cifar100"], "--dataset"),
    ("unknown_export_format", "resume", ["--export=onnx"], "--export"),
    ("resume_and_overwrite", "resume", ["--overwrite"], "--overwrite"),
    # absl's own flag errors
    ("non_integer_rounds", "resume", ["--rounds=abc"], "--rounds"),
    ("fractional_iterations", "resume", ["--iterations=1.5"], "--iterations"),
    ("unknown_flag", "resume", ["--prune_rate=0.2"], "prune_rate"),
    ("positional_argument", "resume", ["lottery"], "unexpected arguments"),
    ("missing_run_dir", "raw", ["--experiment=dense", "--dataset=synthetic_mnist"], "--run_dir"),
    # malformed flagfiles
    ("missing_flagfile", "resume", ["--flagfile={root}/no_such.flags"], "--flagfile"),
    ("flagfile_stray_line", "resume", ["--flagfile={flagfiles[stray_line]}"],
     "unexpected arguments"),
    ("flagfile_bad_value", "resume", ["--flagfile={flagfiles[bad_value]}"], "--rounds"),
    ("flagfile_not_utf8", "resume", ["--flagfile={flagfiles[not_utf8]}"], "--flagfile"),
    ("flagfile_nested_missing", "resume", ["--flagfile={flagfiles[nested_missing]}"],
     "--flagfile"),
    ("flagfile_two_flags_one_line", "resume", ["--flagfile={flagfiles[two_flags_one_line]}"],
     "--iterations"),
    # a resume whose identity flags differ from the run's
    ("mismatched_resume_arch", "resume", ["--arch=conv2"], "--arch"),
    ("mismatched_resume_dataset", "resume", ["--dataset=synthetic"], "--dataset"),
    ("mismatched_resume_criterion", "resume", ["--criterion=small_final"], "--criterion"),
    ("mismatched_resume_rates", "resume", ["--prune_rates=dense=0.3"], "--prune_rates"),
    ("mismatched_resume_seed", "resume", ["--seed=1"], "--seed"),
    ("mismatched_resume_iterations", "resume", ["--iterations=8"], "--iterations"),
    ("resume_of_a_folder_that_is_not_a_run", "raw",
     BASE + ["--resume", "--run_dir={foreign}"], "config.json"),
    # the run directory itself
    ("existing_run_without_resume_or_overwrite", "raw", BASE + ["--run_dir={existing}"],
     "--run_dir"),
    ("overwrite_of_a_folder_that_is_not_a_run", "raw",
     BASE + ["--overwrite", "--run_dir={foreign}"], "--overwrite"),
    ("run_dir_is_a_file", "raw", BASE + ["--run_dir={foreign}/thesis.tex"], "--run_dir"),
    # --source_run without its weights
    ("source_run_missing", "fresh",
     ["--experiment=untrained_supermask", "--source_run={root}/no_such_run"], "--source_run"),
    ("source_run_without_final_weights", "fresh",
     ["--experiment=untrained_supermask", "--source_run={no_weights}"], "final.npz"),
    # running on a cluster: a live process holds the run directory; a full disk at the start
    ("resume_of_a_run_in_use", "raw", BASE + ["--resume", "--run_dir={locked}"],
     "in use by process {holder_pid}"),
    ("overwrite_of_a_run_in_use", "raw", BASE + ["--overwrite", "--run_dir={locked}"],
     "in use by process {holder_pid}"),
    ("export_of_a_run_in_use", "export", ["--run_dir={locked}", "--formats=saved_model"],
     "in use by process {holder_pid}"),
    ("run_dir_on_a_full_disk", "raw", BASE + ["--run_dir={full_disk}/run"],
     "No space left on device"),
]
# --experiment=gradual and --experiment=dynamic_sparse (docs/sparse_training.md): every flag
# out of its range, missing, or given where it means nothing, and the combinations a
# one-round sparse run refuses: (id, args, text the error must contain). Each is parsed in
# this process the way the CLI parses it (absl flags, then `tf_lth.core.config.make`;
# `gradual_window` once the round's length is known); the cases of SPARSE_THROUGH_CLI also
# run the real CLI ("raw", on a fresh --run_dir: exit 2, one line, no run directory).
SPARSE_RUN = ["--dataset=synthetic_mnist", "--iterations=4", "--eval_every=2", "--seed=0",
              "--noprogress"]
GRADUAL = ["--experiment=gradual"] + SPARSE_RUN
DYNAMIC = ["--experiment=dynamic_sparse"] + SPARSE_RUN
SPARSE = [
    ("gradual_final_sparsity_one", GRADUAL + ["--final_sparsity=1.0"], "--final_sparsity"),
    ("gradual_final_sparsity_negative", GRADUAL + ["--final_sparsity=-0.1"], "--final_sparsity"),
    ("gradual_final_sparsity_nan", GRADUAL + ["--final_sparsity=nan"], "--final_sparsity"),
    ("dynamic_final_sparsity_one", DYNAMIC + ["--final_sparsity=1.0"], "--final_sparsity"),
    ("dynamic_final_sparsity_negative", DYNAMIC + ["--final_sparsity=-0.1"], "--final_sparsity"),
    ("gradual_without_final_sparsity", GRADUAL, "--final_sparsity"),
    ("dynamic_without_final_sparsity", DYNAMIC, "--final_sparsity"),
    ("final_sparsity_with_lottery", BASE + ["--final_sparsity=0.5"], "--final_sparsity"),
    ("initial_sparsity_one", GRADUAL + ["--final_sparsity=0.5", "--initial_sparsity=1.0"],
     "--initial_sparsity"),
    ("initial_sparsity_with_dynamic_sparse",
     DYNAMIC + ["--final_sparsity=0.5", "--initial_sparsity=0.2"], "--initial_sparsity"),
    ("negative_begin_step", GRADUAL + ["--final_sparsity=0.5", "--begin_step=-1"],
     "--begin_step"),
    ("end_step_at_begin_step", GRADUAL + ["--final_sparsity=0.5", "--begin_step=3",
                                          "--end_step=3"], "--end_step"),
    ("end_step_before_begin_step", GRADUAL + ["--final_sparsity=0.5", "--begin_step=3",
                                              "--end_step=2"], "--end_step"),
    ("end_step_beyond_the_round", GRADUAL + ["--final_sparsity=0.5", "--begin_step=1",
                                             "--end_step=5"], "--end_step"),
    ("begin_step_beyond_the_round", GRADUAL + ["--final_sparsity=0.5", "--begin_step=4"],
     "--begin_step"),
    ("no_pruning_step_in_the_round", GRADUAL + ["--final_sparsity=0.5"],  # frequency 100
     "--pruning_frequency"),
    ("zero_pruning_frequency", GRADUAL + ["--final_sparsity=0.5", "--pruning_frequency=0"],
     "--pruning_frequency"),
    ("zero_pruning_power", GRADUAL + ["--final_sparsity=0.5", "--pruning_power=0"],
     "--pruning_power"),
    ("pruning_frequency_with_dynamic_sparse",
     DYNAMIC + ["--final_sparsity=0.5", "--pruning_frequency=2"], "--pruning_frequency"),
    ("unknown_sparse_method", DYNAMIC + ["--final_sparsity=0.5", "--sparse_method=magic"],
     "--sparse_method"),
    ("unknown_sparsity_distribution",
     DYNAMIC + ["--final_sparsity=0.5", "--sparsity_distribution=normal"],
     "--sparsity_distribution"),
    ("negative_update_every", DYNAMIC + ["--final_sparsity=0.5", "--update_every=-1"],
     "--update_every"),
    ("update_every_with_gradual", GRADUAL + ["--final_sparsity=0.5", "--update_every=5"],
     "--update_every"),
    ("zero_drop_fraction", DYNAMIC + ["--final_sparsity=0.5", "--drop_fraction=0"],
     "--drop_fraction"),
    ("drop_fraction_above_one", DYNAMIC + ["--final_sparsity=0.5", "--drop_fraction=1.5"],
     "--drop_fraction"),
    ("zero_update_end_step", DYNAMIC + ["--final_sparsity=0.5", "--update_end_step=0"],
     "--update_end_step"),
    ("gradual_with_rounds", GRADUAL + ["--final_sparsity=0.5", "--rounds=2"], "--rounds"),
    ("gradual_with_mirrored_strategy", GRADUAL + ["--final_sparsity=0.5", "--strategy=mirrored"],
     "--strategy"),
    ("dynamic_sparse_with_block_1x4", DYNAMIC + ["--final_sparsity=0.5", "--mask_block=1x4"],
     "--mask_block"),
    ("dynamic_sparse_with_global_scope",
     DYNAMIC + ["--final_sparsity=0.5", "--prune_scope=global"], "--prune_scope"),
]
SPARSE_THROUGH_CLI = ("gradual_final_sparsity_one", "dynamic_without_final_sparsity",
                      "update_every_with_gradual", "unknown_sparse_method",
                      "gradual_with_rounds", "dynamic_sparse_with_block_1x4")
FAST += [(case_id, "raw", args + ["--run_dir={fresh}"], expected)
         for case_id, args, expected in SPARSE if case_id in SPARSE_THROUGH_CLI]
SLOW = [
    ("unknown_dataset", "fresh", ["--dataset=no_such_dataset_xyz"], "--dataset"),
    ("data_dir_without_dataset_nodownload", "fresh",
     ["--dataset=mnist", "--data_dir={empty_data}", "--nodownload"], "--data_dir"),
    ("images_too_small_for_the_network", "fresh",
     ["--dataset=tiny_images", "--data_dir={root}/tfds", "--arch=conv6", "--validation_size=8",
      "--batch_size=8"], "cannot take"),
    ("rewind_beyond_epochs_training_length", "raw",
     ["--experiment=lottery", "--dataset=synthetic_mnist", "--epochs=1", "--batch_size=1000",
      "--rewind_iteration=5", "--run_dir={fresh}"], "--rewind_iteration"),
    ("export_of_a_run_with_no_completed_round", "export",
     ["--run_dir={no_round}", "--formats=saved_model"], "no completed round"),
    # the round's length is known once the data is: the schedule must fit in it
    ("end_step_beyond_the_round", "raw",
     GRADUAL + ["--final_sparsity=0.5", "--begin_step=1", "--end_step=5", "--run_dir={fresh}"],
     "--end_step"),
    ("update_end_step_beyond_the_round", "raw",
     DYNAMIC + ["--final_sparsity=0.5", "--update_end_step=5", "--run_dir={fresh}"],
     "--update_end_step"),
]


def _case_command(world, kind, args):
    args = [arg.format(**world) for arg in args]
    if kind == "export":
        return _command("tf_lth.export", args)
    if kind == "resume":
        return _command("tf_lth.train", BASE + args + ["--resume", f"--run_dir={world['existing']}"])
    if kind == "fresh":
        return _command("tf_lth.train", BASE + args + [f"--run_dir={world['fresh']}"])
    return _command("tf_lth.train", args)  # "raw": exactly the case's arguments


def _check(world, before, result, expected):
    returncode, stdout, stderr = result
    assert "Traceback" not in stderr, stderr[-3000:]
    assert returncode == 2, (returncode, stdout[-1000:], stderr[-3000:])
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert lines, "nothing on stderr"
    last = lines[-1]
    assert last.startswith("error: "), last
    expected = expected.format(**world)
    assert expected in last, (expected, last)
    ours = [line for line in lines if not _is_noise(line)]
    assert ours == [last], ours  # one line
    assert len(last) < 600
    for name, folder in before.items():
        assert snapshot(world[name]) == folder, f"{name} run directory changed"
    assert not os.path.exists(world["fresh"]), "a fresh --run_dir was created"
    assert not os.path.exists(os.path.dirname(world["fresh"])), "--run_dir's parent was created"


@pytest.fixture(scope="module")
def before(world):
    names = ["existing", "foreign", "no_weights", "no_round", "locked"]
    if world["full_disk"]:
        names.append("full_disk")
    return {name: snapshot(world[name]) for name in names}


@pytest.mark.parametrize("case_id,kind,args,expected", FAST, ids=[case[0] for case in FAST])
def test_bad_input_is_refused_before_anything_runs(world, before, case_id, kind, args,
                                                   expected):
    if "{full_disk}" in " ".join(args) and not world["full_disk"]:
        pytest.skip("mounting a small tmpfs is not permitted here")
    process = subprocess.run(_case_command(world, kind, args), cwd=ROOT, env=_env(),
                             capture_output=True, text=True, timeout=300)
    _check(world, before, (process.returncode, process.stdout, process.stderr), expected)
    assert "round 0" not in process.stdout  # nothing trained


@pytest.fixture(scope="module")
def slow_results(world, before):
    """Runs every slow case at once (each imports TensorFlow); {case id: (rc, out, err)}."""
    def start(command):
        return subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    processes = {case_id: start(_case_command(world, kind, args))
                 for case_id, kind, args, _ in SLOW if "tiny_images" not in " ".join(args)}
    exec(world["tiny"], {})  # meanwhile, here: the tiny tfds dataset
    for case_id, kind, args, _ in SLOW:
        if case_id not in processes:  # needs the tiny dataset made above
            processes[case_id] = start(_case_command(world, kind, args))
    results = {}
    for case_id, process in processes.items():
        stdout, stderr = process.communicate(timeout=600)
        results[case_id] = (process.returncode, stdout, stderr)
    return results


@pytest.mark.parametrize("case_id,kind,args,expected", SLOW, ids=[case[0] for case in SLOW])
def test_bad_input_needing_tensorflow_is_refused_before_anything_is_written(
        world, before, slow_results, case_id, kind, args, expected):
    _check(world, before, slow_results[case_id], expected)
    assert "round 0" not in slow_results[case_id][1]  # nothing trained


def test_the_table_covers_every_kind_the_issue_names():
    ids = {case[0] for case in FAST + SLOW}
    for needed in ("unknown_criterion", "unknown_mask_one_action", "unknown_mask_zero_action",
                   "prune_rate_one", "prune_rate_negative", "negative_rounds",
                   "rewind_beyond_training_length", "source_run_without_final_weights",
                   "export_of_a_run_with_no_completed_round", "flagfile_stray_line",
                   "mismatched_resume_arch", "mismatched_resume_dataset",
                   "mismatched_resume_criterion", "mismatched_resume_rates",
                   "images_too_small_for_the_network"):
        assert needed in ids, needed


@pytest.mark.parametrize("case_id,args,expected", SPARSE, ids=[case[0] for case in SPARSE])
def test_sparse_training_flags_are_refused_naming_the_flag(case_id, args, expected):
    from tf_lth.cli import flags as tf_lth_flags
    from tf_lth.core import config as config_lib

    tf_lth_flags.define_flags()
    try:
        tf_lth_flags.FLAGS.unparse_flags()
        tf_lth_flags.FLAGS(["train", *args, "--run_dir=/tmp/unused"])
        with pytest.raises(config_lib.ConfigError) as caught:
            config = tf_lth_flags.to_config()
            if config.experiment == "gradual":  # what the CLI checks once data is loaded
                config_lib.gradual_window(config, config.iterations)
    finally:
        tf_lth_flags.FLAGS.unparse_flags()
    message = str(caught.value)
    assert expected in message and "\n" not in message, message
    assert message.startswith(expected) or f" {expected}" in message, message


def test_the_table_covers_every_sparse_training_flag():
    """Each flag of --experiment=gradual / dynamic_sparse is refused somewhere in the tables
    (docs/sparse_training.md), and so are the combinations a one-round sparse run refuses."""
    from tf_lth.core import config as config_lib

    named = " ".join(case[-1] for case in SPARSE + SLOW)
    for name in ("final_sparsity",) + config_lib._GRADUAL_SETTINGS + config_lib._DYNAMIC_SETTINGS:
        assert f"--{name}" in named, name
    cli = {case[0] for case in FAST + SLOW}
    assert set(SPARSE_THROUGH_CLI) <= cli
    assert {"end_step_beyond_the_round", "update_end_step_beyond_the_round"} <= cli
    refused = {case[0] for case in SPARSE}
    for needed in ("gradual_with_rounds", "gradual_with_mirrored_strategy",
                   "dynamic_sparse_with_block_1x4", "final_sparsity_with_lottery",
                   "gradual_without_final_sparsity", "dynamic_without_final_sparsity"):
        assert needed in refused, needed


@pytest.mark.parametrize("flags, named", [
    (dict(update_every=500, iterations=300), "--update_every=500"),  # 75% of 300 is 225
    (dict(update_every=100, iterations=300, update_end_step=50), "--update_every=100"),
    (dict(update_end_step=301, iterations=300), "--update_end_step=301"),
])
def test_rigl_and_set_without_an_update_step_in_the_round_are_refused(tmp_path, flags, named):
    """A RigL or SET run that would never move a connection is static training under
    another name: refused with the data's round length, before anything is written."""
    from tf_lth.core import config as config_lib
    from tf_lth.core import data as data_lib
    from tf_lth.core import models

    config = config_lib.make(experiment="dynamic_sparse", final_sparsity=0.9,
                             dataset="synthetic_mnist", run_dir=str(tmp_path / "run"), **flags)
    with pytest.raises(config_lib.ConfigError, match=named):
        models.check_compatible(config, data_lib.for_config(config))
    static = config_lib.make(experiment="dynamic_sparse", final_sparsity=0.9,
                             dataset="synthetic_mnist", sparse_method="static",
                             run_dir=str(tmp_path / "run"),
                             **{k: v for k, v in flags.items() if k != "update_end_step"})
    models.check_compatible(static, data_lib.for_config(static))  # static needs no update
