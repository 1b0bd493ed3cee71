"""JAX's persistent compilation cache (runtime.compilation_cache_dir): a second `train` in a
fresh process loads the train step instead of compiling it, as JAX's own cache-hit log
records say (read through w2s_vqa.runtime.cache_events, never timed)."""

import json
import os
import subprocess
import sys

from tests.train.test_resume import REPO, overrides, train_command


def _train(pool, workdir, cache_dir, steps):
    env = {k: v for k, v in os.environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
    done = subprocess.run(train_command(workdir, overrides(pool, f"train.num_steps={steps}",
                                                           f"runtime.compilation_cache_dir='{cache_dir}'",
                                                           "runtime.compilation_cache_min_compile_seconds=0")),
                          cwd=REPO, env={**env, "JAX_PLATFORMS": "cpu"}, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.splitlines()


def test_a_second_launch_loads_the_train_step_from_the_cache(pool, tmp_path):
    cache = tmp_path / "cache"
    first = _train(pool, tmp_path / "first", cache, 1)
    assert json.loads(first[-1])["compilation_cache"]["step"] == "compiled", first
    assert any(line.startswith("train step compiled and written to the compilation cache") for line in first)
    entries = [name for name in os.listdir(cache) if name.startswith("jit_step-") and name.endswith("-cache")]
    assert len(entries) == 1, sorted(os.listdir(cache))

    # A fresh process and a fresh workdir: nothing in memory, nothing to resume.
    second = _train(pool, tmp_path / "second", cache, 1)
    report = json.loads(second[-1])["compilation_cache"]
    assert report["step"] == "cache" and report["dir"] == str(cache), report
    assert "jit_step" not in report["misses"]
    assert f"train step loaded from the compilation cache {cache}" in "\n".join(second)


def test_an_empty_setting_turns_the_cache_off(pool, tmp_path):
    lines = _train(pool, tmp_path / "run", "", 1)
    report = json.loads(lines[-1])["compilation_cache"]
    assert report["step"] == "off" and report["dir"] is None and report["hits"] == []
