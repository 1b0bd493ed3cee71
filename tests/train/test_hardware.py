"""Chips, TPU slices and plan targets (train.hardware)."""

import math

import numpy as np
import pytest

from w2s_vqa.train import hardware


def test_named_slices_follow_the_cloud_tables():
    assert hardware.tpu_topology("v5p-64").libtpu_name == "v5:2x4x4"
    assert hardware.tpu_topology("v5p-64").num_chips == 32 and hardware.tpu_topology("v5p-64").hosts == 8
    assert hardware.tpu_topology("v5litepod-8").libtpu_name == "v5e:2x4"
    assert hardware.tpu_topology("v6e-64").hosts == 16
    assert hardware.tpu_topology("v4:2x2x2").num_chips == 8
    assert math.isclose(hardware.CHIPS["v6e"].peak_flops, 918e12)
    assert np.all([r["chips"] * 2 == int(r["name"].split("-")[1]) for r in hardware.topology_table()
                   if r["chip"] in ("v4", "v5p")])


def test_targets_are_parsed_and_bad_ones_named():
    assert hardware.parse_target("cpu:8") == hardware.Target("cpu", "cpu:8", num_devices=8)
    assert hardware.parse_target("local").kind == "local"
    assert hardware.parse_target("v5p-8").topology.shape == (2, 2, 1)
    with pytest.raises(hardware.PlanError, match="unknown target 'v9-8'"):
        hardware.parse_target("v9-8")
    with pytest.raises(hardware.PlanError, match="at least one CPU device"):
        hardware.parse_target("cpu:0")
    with pytest.raises(hardware.PlanError, match="v5p slices have 3 axes"):
        hardware.parse_target("v5p:4x4")


def test_a_planning_process_gets_the_cpu_backend_and_the_device_count(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=2 --xla_dump_to=/tmp/x")
    env = hardware.environment_for(hardware.parse_target("cpu:8"))
    assert env["JAX_PLATFORMS"] == "cpu"
    assert env["XLA_FLAGS"] == "--xla_dump_to=/tmp/x --xla_force_host_platform_device_count=8"
    assert hardware.environment_for(hardware.parse_target("v5e-4"))["TPU_WORKER_ID"] == "0"


def test_gpus_are_found_by_jaxs_device_kind():
    assert hardware.gpu_chip("NVIDIA H100 80GB HBM3").kind == "H100"
    assert hardware.gpu_chip("NVIDIA H200").peak_flops == 989e12
    assert hardware.gpu_chip("cpu") is None
