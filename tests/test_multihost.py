"""w2s_vqa.multihost: joining processes, barriers, broadcasts from process 0 and gathers,
in one process (where each is the value itself) and across two real processes."""

import json
import os
import socket
import subprocess
import sys

import numpy as np

from w2s_vqa import config as config_lib
from w2s_vqa import multihost

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_distributed_timeouts_reach_jax(monkeypatch):
    import jax

    calls = []
    monkeypatch.setattr(jax.distributed, "initialize", lambda **kwargs: calls.append(kwargs))
    config = config_lib.load_config(None, ["distributed.coordinator_address='10.0.0.1:1234'",
                                           "distributed.num_processes=2", "distributed.heartbeat_timeout_seconds=7"])
    multihost.initialize(config)
    assert calls[0]["heartbeat_timeout_seconds"] == 7 and calls[0]["initialization_timeout"] == 300
    assert calls[0]["shutdown_timeout_seconds"] == 300 and calls[0]["coordinator_address"] == "10.0.0.1:1234"
    multihost.initialize(config_lib.load_config(None, []))  # no coordinator, not auto: nothing joins
    assert len(calls) == 1


def test_one_process_gets_its_own_values_back():
    multihost.barrier("alone")  # returns at once
    assert multihost.is_first()
    flags = multihost.broadcast(np.array([True, False]))
    assert flags.dtype == bool and flags.tolist() == [True, False]
    assert bool(multihost.broadcast(False)) is False
    assert multihost.gather_json({"a": [1, 2]}) == [{"a": [1, 2]}]


def test_two_processes_agree_on_process_0s_values_and_gather_everyones():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=2", "JAX_PLATFORMS": "cpu"}
    procs = [subprocess.Popen([sys.executable, "-m", "tests.multihost_worker", str(port), str(rank)], cwd=REPO,
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for rank in range(2)]
    outputs = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outputs]
    got = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    assert [g["first"] for g in got] == [True, False]
    gathered = [{"rank": 0, "text": "é"}, {"rank": 1, "text": "é" * 8}]
    for g in got:
        assert g["flags"] == [True, False, True] and g["flags_dtype"] == "bool"
        assert g["numbers"] == [0.0, 1.0, 2.0]  # process 0's, small integers: exact in float32
        assert g["flag"] is True
        assert g["gathered"] == gathered
