"""w2s_vqa.workdir: a reader never sees half a file; a directory serves one run.

Local paths are the case tested here (object stores are written as one final object, see
the module docstring). The digest is checked against hashlib on the same bytes read
another way, so a change of chunking cannot change it.
"""

import hashlib
import json
import os

import pytest

from w2s_vqa import workdir


def test_an_atomic_write_replaces_the_file_whole_or_not_at_all(tmp_path):
    target = tmp_path / "table.json"
    workdir.write_json(target, {"a": 1})
    assert json.loads(target.read_text()) == {"a": 1}
    with pytest.raises(RuntimeError):
        with workdir.atomic_open(target) as f:
            f.write('{"half": ')
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"a": 1}  # the old file stands
    assert sorted(os.listdir(tmp_path)) == ["table.json"]  # the partial temporary file is gone
    workdir.write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    with pytest.raises(ValueError, match="mode must be"):
        with workdir.atomic_open(target, "a"):
            pass


def test_the_digest_is_sha256_of_the_bytes(tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)  # more than one read chunk
    (tmp_path / "w.bin").write_bytes(data)
    assert workdir.file_digest(tmp_path / "w.bin") == hashlib.sha256(data).hexdigest()


def test_a_run_record_refuses_another_run_naming_every_difference(tmp_path):
    record = workdir.RunRecord(tmp_path / "run" / "run.json", allowed=("train.num_steps", "log.*"))
    first = {"student": "a", "train": {"num_steps": 10, "lr": 0.1}, "log": {"every": 5}}
    assert record.check(first) is None  # the first run records itself
    assert record.read() == first
    changed = {**first, "train": {"num_steps": 20, "lr": 0.1}, "log": {"every": 1}}
    assert record.check(changed) == first  # only allowed keys changed
    with pytest.raises(workdir.RunError) as e:
        record.check({**first, "student": "b", "train": {"num_steps": 10, "lr": 0.2}})
    assert str(e.value).startswith(f"{tmp_path / 'run'}: holds another run: student: 'a' -> 'b'; train.lr: 0.1 -> 0.2")
    assert record.read() == first  # a refused run writes nothing
    # A key the saved record lacks (recorded before it existed) is not compared.
    assert record.check({**first, "added_later": 1}) == first


def test_a_run_record_that_finished_nothing_takes_the_new_settings(tmp_path):
    record = workdir.RunRecord(tmp_path / "run.json")
    first = {"data": {"batch_size": 16}, "seed": 0}
    record.check(first)
    now = {"data": {"batch_size": 4}, "seed": 0}
    assert record.check(now, finished=False) == first
    assert record.replaced == ["data.batch_size: 16 -> 4"] and record.read() == now
    assert record.check(now, finished=True) == now and record.replaced == []
    with pytest.raises(workdir.RunError, match=r"data.batch_size: 4 -> 16"):
        record.check(first)  # something finished under the new settings: refused
    assert record.read() == now
    # Another process (write=False) takes it too, writing nothing.
    assert record.check(first, write=False, finished=False) == now and record.read() == now


def test_a_run_record_written_by_another_process_only(tmp_path):
    record = workdir.RunRecord(tmp_path / "r.json")
    assert record.check({"x": 1}, write=False) is None
    assert not (tmp_path / "r.json").exists()
