"""--strategy: MirroredStrategy on two logical CPUs, and MultiWorkerMirroredStrategy on localhost.

Each check runs in subprocesses: logical devices must be configured before TensorFlow
initialises, and a multi-worker strategy must exist before the first TensorFlow op.

Tolerance: a replica computes its half of the batch and the gradients are summed across
replicas, so results differ from one device only by float32 summation order. Losses must
agree to 1e-4 (relative, plus 1e-6 absolute) and masks must be identical; a learned
supermask's expected mask (sigmoid(logit) > 0.5) may flip only for logits within rounding
of 0, so at least 99.9% of its entries must agree. Under MirroredStrategy training runs
the plain graph (no XLA). The supermask's one-device run uses --jit_compile=off too, so
both sides run the same ops; the lottery's uses XLA, and its losses must still agree.
"""

import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LOSS_RTOL, LOSS_ATOL = 1e-4, 1e-6

MIRRORED_SCRIPT = textwrap.dedent("""
    import json, sys
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

    import trainers
    from tf_lth.core.distribute import make_strategy
    from tf_lth.core import config as config_lib

    experiment, out = sys.argv[1], sys.argv[2]
    replicas = {}
    for strategy in ("default", "mirrored"):
        extra = dict(rounds=1) if experiment == "lottery" else dict(eval_samples=2,
                                                                    jit_compile="off")
        config = config_lib.make(
            experiment=experiment, dataset="synthetic_mnist", iterations=int(sys.argv[3]),
            eval_every=4, strategy=strategy, deterministic=True, progress=False,
            run_dir=f"{out}/{strategy}", **extra)
        trainers.run(config, log=lambda line: None)
        replicas[strategy] = make_strategy(strategy).num_replicas_in_sync
    print(json.dumps(replicas))
""")


def _run_mirrored(tmp_path, experiment, iterations):
    script = tmp_path / "mirrored.py"
    script.write_text(MIRRORED_SCRIPT)
    env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, str(script), experiment, str(tmp_path), str(iterations)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=180,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def _metrics(run_dir, round_index):
    path = os.path.join(run_dir, f"round_{round_index:03d}", "metrics.jsonl")
    with open(path) as stream:
        return [json.loads(line) for line in stream if line.strip()]


def _assert_same_losses(run_a, run_b, round_index):
    a, b = _metrics(run_a, round_index), _metrics(run_b, round_index)
    assert [r["iteration"] for r in a] == [r["iteration"] for r in b]
    for key in ("train_loss", "val_loss", "test_loss"):
        left = [r[key] for r in a if key in r]
        right = [r[key] for r in b if key in r]
        np.testing.assert_allclose(left, right, rtol=LOSS_RTOL, atol=LOSS_ATOL, err_msg=key)


def _masks(run_dir, round_index):
    with np.load(os.path.join(run_dir, f"round_{round_index:03d}", "masks.npz")) as archive:
        return {key: archive[key] for key in archive.files}


def test_mirrored_two_cpus_matches_one_device_for_a_lottery_round(tmp_path):
    replicas = _run_mirrored(tmp_path, "lottery", 12)
    assert replicas == {"default": 1, "mirrored": 2}
    single, mirrored = str(tmp_path / "default"), str(tmp_path / "mirrored")
    for round_index in (0, 1):
        _assert_same_losses(single, mirrored, round_index)
    masks_single, masks_mirrored = _masks(single, 1), _masks(mirrored, 1)
    assert masks_single.keys() == masks_mirrored.keys()
    for name in masks_single:
        assert 0.5 < masks_single[name].mean() < 1.0  # round 1 really pruned
        np.testing.assert_array_equal(masks_single[name], masks_mirrored[name], err_msg=name)


def test_mirrored_two_cpus_matches_one_device_for_a_supermask_epoch(tmp_path):
    # synthetic_mnist: 2000 training images / batch 250 = one epoch of 8 iterations.
    replicas = _run_mirrored(tmp_path, "learned_supermask", 8)
    assert replicas == {"default": 1, "mirrored": 2}
    single, mirrored = str(tmp_path / "default"), str(tmp_path / "mirrored")
    _assert_same_losses(single, mirrored, 0)
    masks_single, masks_mirrored = _masks(single, 0), _masks(mirrored, 0)
    for name in masks_single:
        agreement = np.mean(masks_single[name] == masks_mirrored[name])
        assert agreement >= 0.999, (name, agreement)


def _free_ports(count):
    sockets = []
    for _ in range(count):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sockets.append(sock)
    ports = [sock.getsockname()[1] for sock in sockets]
    for sock in sockets:
        sock.close()
    return ports


TRAIN_FLAGS = ["--experiment=lottery", "--dataset=synthetic_mnist", "--iterations=12",
               "--eval_every=4", "--rounds=1", "--deterministic", "--noprogress"]


def test_multi_worker_two_processes_on_localhost_complete_a_lottery_round(tmp_path):
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    processes = []
    for index in range(2):
        env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2", TF_CONFIG=json.dumps(
            {"cluster": cluster, "task": {"type": "worker", "index": index}}))
        processes.append(subprocess.Popen(
            [sys.executable, "-m", "tf_lth.train", *TRAIN_FLAGS, "--strategy=multi_worker",
             f"--run_dir={tmp_path / f'worker{index}'}"],
            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    outputs = []
    try:
        for process in processes:
            outputs.append(process.communicate(timeout=150))
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    for index, (process, (stdout, stderr)) in enumerate(zip(processes, outputs)):
        assert process.returncode == 0, (index, [err[-2000:] for _, err in outputs])
    chief = tmp_path / "worker0"
    with open(chief / "results.json") as stream:
        rounds = json.load(stream)["rounds"]
    assert [record["round"] for record in rounds] == [0, 1]
    # worker 1 wrote its files to a temporary folder, removed at the end
    line = next(line for line in outputs[1][0].splitlines() if "non-chief worker" in line)
    assert not os.path.exists(line.split("writing to ", 1)[1].strip())
    assert not (tmp_path / "worker1" / "round_000").exists()

    # The same run on one device gives the same masks and losses.
    single = tmp_path / "single"
    result = subprocess.run(
        [sys.executable, "-m", "tf_lth.train", *TRAIN_FLAGS, f"--run_dir={single}"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    for round_index in (0, 1):
        _assert_same_losses(str(single), str(chief), round_index)
    for name, mask in _masks(str(single), 1).items():
        np.testing.assert_array_equal(mask, _masks(str(chief), 1)[name], err_msg=name)

