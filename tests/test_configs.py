"""Config files, overrides and launch scripts: what a user edits and runs."""

import dataclasses
import fnmatch
import os
import subprocess

import numpy as np
import pytest

from w2s_vqa import config as config_lib
from w2s_vqa.config import ConfigError, defaults, load_config
from w2s_vqa.models import config as model_config
from w2s_vqa.models import student
from w2s_vqa.train import evals, objective, optim
from w2s_vqa.train.step import ParamCodec

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def repo(path: str) -> str:
    return os.path.join(REPO, path)


def test_the_7b_config_is_the_papers_regime():
    config = load_config(repo("configs/w2s_llava_ov_7b.py") + ":gpu")
    cfg = model_config.student_config(config)
    codec = ParamCodec(student.create_abstract(cfg))
    assert 7.9e9 < sum(int(np.prod(s)) for s in codec.shapes.values()) < 8.2e9
    oc = optim.OptimConfig.from_config(config)
    rates = optim.group_rates(oc)
    by_rate = {}
    for key in codec.keys:
        by_rate.setdefault(rates[optim.group_of(key, oc.groups)], set()).add(key.split(".")[0])
    assert by_rate == {0.0: {"language_model", "lm_head"}, 2e-6: {"vision_tower"},
                       1e-5: {"multi_modal_projector", "motion_projector", "image_newline"}}
    assert cfg.tokens_per_video == 8 * 14 * 14 + 1 + 10
    assert tuple(load_config(repo("configs/w2s_llava_ov_7b.py") + ":tpu").mesh.shape) == (-1, 1, 2)


def test_every_config_file_builds_its_student_shapes():
    for path in ["configs/tiny_cpu.py", "configs/llava_ov_0_5b.py", "configs/w2s_llava_ov_7b.py",
                 "configs/w2s_released.py"]:
        config = load_config(repo(path))
        assert model_config.student_config(config).vision.image_size == config.data.image_size


def test_overrides_are_typed_and_bad_ones_all_reported():
    config = load_config(None, ["train.num_steps=7", "optim.learning_rate=1", "data.store=/x"])
    assert config.train.num_steps == 7 and config.optim.learning_rate == 1.0 and config.data.store == "/x"
    with pytest.raises(ConfigError) as error:
        load_config(None, ["train.nope=1", "model", "data.num_frames=1"])
    assert "'train.nope': no such config key" in str(error.value) and "'model': expected key=value" in str(error.value)
    # A value of the wrong type says what to write, in the config's own terms.
    with pytest.raises(ConfigError) as error:
        load_config(None, ["model.scan_layers=true", "mesh.shape=banana", "data.num_frames=x"])
    message = str(error.value)
    assert "'model.scan_layers=true': expects True or False (the default is False)" in message
    assert "'mesh.shape=banana': expects a tuple such as (1, 8, 1)" in message
    assert "'data.num_frames=x': expects an integer" in message


def test_a_mistyped_key_gets_the_closest_keys():
    with pytest.raises(ConfigError) as error:
        load_config(None, ["train.num_step=3", "trian.log_every=2", "learning_rate=1e-3", "zzz=1"])
    message = str(error.value)
    assert "'train.num_step': no such config key (did you mean train.num_steps" in message  # the closest first
    assert "'trian.log_every': no such config key (did you mean train.log_every?)" in message
    assert "'learning_rate': no such config key (did you mean optim.learning_rate?)" in message
    assert message.endswith("'zzz': no such config key")


def test_resume_differences_leave_out_safe_keys_and_keys_added_since():
    keys = config_lib.flatten(defaults())
    for pattern in config_lib.RESUME_SAFE_KEYS:  # each names a real key: a rename cannot slip through
        assert any(fnmatch.fnmatchcase(key, pattern) for key in keys), pattern
    saved = config_lib.as_json(defaults())
    del saved["distributed"]["heartbeat_timeout_seconds"], saved["seed"], saved["data"]["augment"]
    now = load_config(None, ["train.num_steps=5", "mesh.shape=(2,2,2)", "distributed.heartbeat_timeout_seconds=9",
                             "model.attention='blocked'", "data.batch_size=4", "optim.groups=[['^vision', 0]]",
                             "data.augment='swap'"])
    # seed is at its default, as the code that wrote the checkpoint had it; augment is not.
    assert config_lib.config_differences(saved, now) == [
        "data.augment: not in the saved config -> 'swap'", "data.batch_size: 16 -> 4",
        "optim.groups: [] -> [['^vision', 0]]"]
    assert config_lib.config_differences(saved, now, allowed=config_lib.RESUME_SAFE_KEYS + ("data.*", "optim.*")) == []


@pytest.mark.parametrize("cls,section", [(optim.OptimConfig, "optim"), (objective.ObjectiveConfig, "objective"),
                                         (evals.EvalConfig, "evals.val")])
def test_option_dataclasses_take_every_value_from_the_config(cls, section):
    # defaults() is the one home of a default: a field default here could silently differ from it.
    assert all(f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
               for f in dataclasses.fields(cls))
    config = defaults()
    extra = {"name": "val"} if cls is evals.EvalConfig else {}
    built = config_lib.from_section(cls, config, section, **extra)
    node = config
    for part in section.split("."):
        node = node[part]
    assert {k: getattr(built, k) for k in node} == {k: (tuple(map(tuple, v)) if k == "groups" else v)
                                                     for k, v in node.items()}
    node.not_a_field = 1
    del node[next(iter(node.keys()))]
    with pytest.raises(ConfigError, match=rf"unknown keys {section}\.not_a_field; missing keys {section}\."):
        config_lib.from_section(cls, config, section, **extra)


def test_the_optimizer_reads_the_configs_learning_rate():
    config = load_config(None, ["optim.learning_rate=3e-3", "optim.groups=[['^vision_tower', 0]]"])
    oc = optim.OptimConfig.from_config(config)
    assert oc.learning_rate == 3e-3 and oc.groups == (("^vision_tower", 0.0),)
    assert optim.is_frozen("vision_tower.post_layernorm.scale", oc)
    with pytest.raises(ConfigError, match=r"optim.groups\[0\]: bad regex"):
        optim.OptimConfig.from_config(load_config(None, ["optim.groups=[['(', 1e-3]]"]))


def test_evals_are_config_data_and_data_val_pairs_is_their_shorthand():
    assert evals.evals_from_config(defaults()) == []  # the default "val" entry waits for a pair table
    config = load_config(None, ["data.val_pairs=/v.parquet", "train.eval_every=7", "train.eval_batches=3"])
    assert config.evals.val.pairs == "/v.parquet" and "val_pairs" not in config.data
    config.evals.held = config_lib.eval_entry(pairs="/h.parquet", every=2)
    assert evals.evals_from_config(config) == [
        evals.EvalConfig(name="held", kind="pairs", pairs="/h.parquet", every=2, batches=3),
        evals.EvalConfig(name="val", kind="pairs", pairs="/v.parquet", every=7, batches=3)]
    # A config without the entry gets it from the shorthand; the long form needs it to exist.
    bare = defaults()
    del bare.evals["val"]
    config_lib.apply_overrides(bare, ["data.val_pairs=/v.parquet"])
    assert bare.evals.val.pairs == "/v.parquet"
    with pytest.raises(ConfigError, match="'evals.other.pairs': no such config key"):
        load_config(None, ["evals.other.pairs=/x"])
    for name, fields, message in [("val", {"kind": "mos"}, "evals.val.kind='mos'"),
                                  ("train", {}, "may not hold '/' or be 'train'")]:
        bad = defaults()
        bad.evals[name] = config_lib.eval_entry(pairs="/x", **fields)
        with pytest.raises(ConfigError, match=message):
            evals.evals_from_config(bad)


@pytest.mark.parametrize("script,args,expected", [
    ("launch/local.sh", ["configs/tiny_cpu.py", "runs/t"], "w2s-vqa train --config configs/tiny_cpu.py --workdir runs/t"),
    ("launch/tpu_pod.sh", ["--workers", "2", "--no-install", "--logs", "L", "my-v5p", "us-east5-a", "train",
                           "--config", "configs/w2s_llava_ov_7b.py:tpu", "--workdir", "gs://b/run", "--set",
                           "data.store=/s"],
     "tpu-vm ssh my-v5p --zone us-east5-a --worker=1 --command 'cd ~/w2s-vqa/src && ~/w2s-vqa/.venv/bin/w2s-vqa train "
     "--config configs/w2s_llava_ov_7b.py:tpu --workdir gs://b/run --set data.store=/s --set distributed.auto=True'"),
    ("launch/gpu_slurm.sh", ["2", "train", "--config", "configs/w2s_llava_ov_7b.py:gpu", "--workdir", "/shared/run"],
     "sbatch --nodes 2 --ntasks-per-node 1 --gpus-per-node 8"),
])
def test_launch_scripts_dry_run(script, args, expected):
    out = subprocess.run(["bash", repo(script), "--dry-run", *args], capture_output=True, text=True,
                         check=True).stdout
    assert expected in out
    usage = subprocess.run(["bash", repo(script)], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage" in usage.stderr


def test_a_config_file_with_an_unknown_or_wrong_typed_key_is_refused_by_name(tmp_path):
    from w2s_vqa.config import ConfigError, load_config

    typo = tmp_path / "typo.py"
    typo.write_text("from w2s_vqa.config import defaults\n\ndef get_config():\n"
                    "    c = defaults()\n    c.train.num_stepz = 10\n    return c\n")
    with pytest.raises(ConfigError, match=r"typo.py: unknown config key.*'train.num_stepz' \(did you mean train.num_steps"):
        load_config(str(typo))
    wrong = tmp_path / "wrong.py"
    wrong.write_text("from w2s_vqa.config import defaults\n\ndef get_config():\n"
                     "    c = defaults()\n    c.train.num_steps = 'ten'\n    return c\n")
    with pytest.raises(ConfigError, match=r"wrong.py:5: get_config\(\) failed: TypeError"):
        load_config(str(wrong))
    with pytest.raises(ConfigError, match=r"w2s_llava_ov_7b.py:\d+: get_config\('cpu'\) failed: KeyError"):
        load_config(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "w2s_llava_ov_7b.py") + ":cpu")


def test_a_config_file_missing_a_key_or_not_python_is_named(tmp_path):
    lost = tmp_path / "lost.py"
    lost.write_text("from w2s_vqa.config import defaults\n\ndef get_config():\n"
                    "    c = defaults()\n    del c.stages['anchors']\n    return c\n")
    with pytest.raises(ConfigError, match=r"lost.py: missing config key\(s\), which defaults\(\) has: stages.anchors"):
        load_config(str(lost))
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n    pass\n")
    with pytest.raises(ConfigError, match=r"broken.py:1: not valid Python"):
        load_config(str(broken))


def test_a_config_file_that_fails_to_import_is_one_line_naming_file_line_and_exception(tmp_path, capsys):
    from w2s_vqa import cli

    cases = {"name.py": ("import os\n\nx = undefined_name\n", 3, "NameError: name 'undefined_name' is not defined"),
             "module.py": ("\nimport no_such_module_here\n", 2,
                           "ModuleNotFoundError: No module named 'no_such_module_here'"),
             "multi.py": ("def get_config():\n    raise RuntimeError('first\\nsecond')\n", 2,
                          "RuntimeError: first second")}
    for name, (text, line, tail) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(ConfigError) as error:
            load_config(str(tmp_path / name))
        message = str(error.value)
        assert message.startswith(f"{tmp_path / name}:{line}: ") and message.endswith(tail), message
        assert "\n" not in message
    # Through the command line: one line on stderr, status 2, no traceback.
    assert cli.main(["pairs", "--config", str(tmp_path / "name.py"), "--store", "s", "--out", "o",
                     "--teachers", "t.csv"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"w2s-vqa pairs: error: {tmp_path / 'name.py'}:3: importing "
                                                   "the config file failed: NameError"), err


def test_shipped_configs_resolve_by_name_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    # Every config of the repository's configs/ folder, found through the package.
    repository = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs")
    want = sorted(name[:-3] for name in os.listdir(repository) if name.endswith(".py"))
    assert config_lib.shipped_configs() == want and {"tiny_cpu", "w2s_llava_ov_7b", "w2s_released"} <= set(want)
    assert tuple(load_config("w2s_llava_ov_7b:tpu").mesh.shape) == (-1, 1, 2)  # the name and its argument
    assert tuple(load_config("w2s_llava_ov_7b.py:gpu").mesh.shape) == (1, 8, 1)
    # README's repository-relative path, from a directory that has no configs/ of its own.
    assert load_config("configs/tiny_cpu.py").model.preset == "tiny"
    assert config_lib.resolve_config_path("configs/llava_ov_0_5b.py") == os.path.join(
        config_lib.SHIPPED_CONFIGS, "llava_ov_0_5b.py")
    assert os.path.samefile(config_lib.SHIPPED_CONFIGS, repo("configs"))  # the repository's folder itself
    # A file that exists is taken as given, before any shipped config of that name.
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "tiny_cpu.py").write_text(
        "from w2s_vqa.config import defaults\n\ndef get_config():\n    c = defaults()\n    c.seed = 41\n"
        "    return c\n")
    assert load_config("configs/tiny_cpu.py").seed == 41 and load_config("tiny_cpu").seed == 0
    # Anything else: the error names the shipped configs and where they are.
    for missing in ("tiny_gpu", "elsewhere/tiny_cpu.py", str(tmp_path / "no" / "configs" / "tiny_cpu.py")):
        with pytest.raises(ConfigError) as error:
            load_config(missing)
        assert str(error.value) == (f"{missing}: no such config file; the shipped configs, found by name from any "
                                    f"directory: {', '.join(want)} (in "
                                    f"{config_lib.SHIPPED_CONFIGS}), e.g. --config tiny_cpu")


def test_ctrl_c_outside_training_is_one_line_and_status_130(monkeypatch, capsys):
    from w2s_vqa import cli
    from w2s_vqa.main import anchors

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(anchors, "run", interrupted)
    assert cli.main(["anchors", "--store", "s", "--mos", "m.csv", "--k", "2", "--out", "o"]) == 130
    assert capsys.readouterr().err == ("w2s-vqa anchors: interrupted; what is finished is kept: run the same "
                                       "command again to resume\n")


def test_keys_of_names_take_a_list_or_commas_and_hold_commas(tmp_path):
    assert config_lib.NAME_LIST_KEYS == ("data.augment", "stages.lower_is_better", "stages.eval_tfds")
    config = load_config(None, ["stages.lower_is_better=['niqe', 'brisque']", "stages.eval_tfds=('konvid_1k',)"])
    assert config.stages.lower_is_better == "niqe,brisque" and config.stages.eval_tfds == "konvid_1k"
    assert load_config(None, ["stages.lower_is_better=niqe,brisque"]).stages.lower_is_better == "niqe,brisque"
    assert load_config(None, ["data.augment=True"]).data.augment is True  # pipeline.parse_augment: every one
    listed = tmp_path / "listed.py"
    listed.write_text("from w2s_vqa.config import defaults\n\ndef get_config():\n    c = defaults()\n"
                      "    c.stages.lower_is_better = ['niqe']\n    c.data.augment = ('views', 'swap')\n    return c\n")
    config = load_config(str(listed))
    assert config.stages.lower_is_better == "niqe" and config.data.augment == "views,swap"
    with pytest.raises(ConfigError, match=r"^stages.lower_is_better: expected names, comma-separated \('a,b'\) or a "
                                          r"list \(\['a', 'b'\]\), got 3$"):
        load_config(None, ["stages.lower_is_better=3"])
