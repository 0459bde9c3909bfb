"""Beyond one machine: sharded caching, and tf.distribute training with real workers on 127.0.0.1."""

import json
import os
import re
import socket
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.test_reliability import image_folder, retrain_arguments
from tlcourse import bottlenecks
from tlcourse.data import scan_dataset


def run_side_by_side(commands, env=None, timeout=600):
    children = [
        subprocess.Popen(
            [sys.executable, *command],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, **(extra or {})},
        )
        for command, extra in zip(commands, env or [None] * len(commands), strict=True)
    ]
    return [(child.wait(timeout=timeout), child.stdout.read(), child.stderr.read()) for child in children]


@pytest.mark.slow
def test_two_sharded_caching_processes_cover_every_image_exactly_once(tmp_path, lite0):
    dataset = scan_dataset(image_folder(tmp_path / "images", 12))
    cache = tmp_path / "bn"
    commands = [
        retrain_arguments(dataset.root, tmp_path / f"out{k}", cache, 10) + ["--num_shards=2", f"--shard_index={k}"]
        for k in (0, 1)
    ]
    results = run_side_by_side(commands)
    computed = []
    for code, out, err in results:
        assert code == 0, err[-2000:]
        computed.append(int(re.search(r"bottlenecks: 0 cached, (\d+) computed", out).group(1)))
    shards = [bottlenecks.shard(dataset.images, 2, k) for k in (0, 1)]
    assert computed == [len(s) for s in shards] and sum(computed) == len(dataset.images)
    assert not {r.sha256 for r in shards[0]} & {r.sha256 for r in shards[1]}
    final = bottlenecks.cache_bottlenecks(dataset.images, lite0, cache, progress=False)
    assert (final.hits, final.computed) == (len(dataset.images), 0)


def free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def head_weights(out):
    return keras.models.load_model(out / "graph.keras").get_layer("retrained_head").get_weights()


@pytest.mark.slow
def test_two_workers_with_multi_worker_mirrored_match_a_single_process(tmp_path, lite0):
    dataset = scan_dataset(image_folder(tmp_path / "images", 12))
    cache = tmp_path / "bn"
    bottlenecks.cache_bottlenecks(dataset.images, lite0, cache, progress=False)
    workers = [f"127.0.0.1:{port}" for port in free_ports(2)]
    commands, envs = [], []
    for index in (0, 1):
        commands.append(
            retrain_arguments(dataset.root, tmp_path / f"worker{index}", cache, 100)
            + ["--distribution_strategy=multi_worker_mirrored"]
        )
        config = {"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}}
        envs.append({"TF_CONFIG": json.dumps(config)})
    for code, out, err in run_side_by_side(commands, envs):
        assert code == 0, err[-3000:]
        assert "training on 2 replica(s) with multi_worker_mirrored" in out
    ((single_code, _, err),) = run_side_by_side([retrain_arguments(dataset.root, tmp_path / "single", cache, 100)])
    assert single_code == 0, err[-3000:]

    first, second, single = (head_weights(tmp_path / name) for name in ("worker0", "worker1", "single"))
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)  # both workers end with the very same layer
    for a, b in zip(first, single, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)  # and it is the single-process layer
    reports = [json.loads((tmp_path / name / "graph.report.json").read_text()) for name in ("worker0", "single")]
    assert abs(reports[0]["accuracy"] - reports[1]["accuracy"]) <= 0.05
