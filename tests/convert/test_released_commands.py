"""README's "Score videos with the paper's model", run end to end on a tiny stand-in of the
released checkpoint (tests/convert/llava_qwen_reference.py) with configs/w2s_released.py,
and its one-command "fine-tune it on your MOS set" and "continue its stages on your pool".

Two steps are stood in for, nothing else: the download (the stand-in directory is what
`huggingface-cli download` leaves, in the authors' layout) and `convert-slowfast` (random
weights in the file format it writes; the verb itself is tested in
tests/models/test_slowfast.py against pytorchvideo). Frames are 32x32, the stand-in's tower.
"""

import json
import os

import numpy as np
import pandas as pd

from tests.convert import llava_qwen_reference as ref
from w2s_vqa import cli, video
from w2s_vqa.models import slowfast

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "w2s_released.py")


def _clips(folder, count, seed):
    """`count` 2-second 8 fps clips of one scene with rising noise."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    scene = rng.integers(0, 256, (16, 48, 64, 3)).astype(np.float64)
    for i in range(count):
        frames = np.clip(scene + rng.normal(0, 12 * i, scene.shape), 0, 255).astype(np.uint8)
        video.write_video(os.path.join(folder, f"v{i}.mp4"), frames, 8.0)
    return str(folder)


def _slowfast_weights(path):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    tensors = {}
    for name, shape in slowfast.expected_tensors().items():
        if name.endswith(".kernel"):
            value = rng.normal(0, np.sqrt(2 / np.prod(shape[:-1])), shape)
        elif name.endswith("running_var") or name.endswith("norm.weight"):
            value = rng.uniform(0.5, 1.5, shape)
        else:
            value = rng.normal(0, 0.1, shape)
        tensors[name] = value.astype(np.float32)
    save_file(tensors, str(path))
    return str(path)


def _last_json(capsys):
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_score_videos_with_the_papers_model_in_the_readme_commands(tmp_path, capsys):
    stage3 = ref.write_released(tmp_path / "w2s_stage3")  # huggingface-cli download ... --local-dir w2s_stage3
    weights = _slowfast_weights(tmp_path / "slowfast_r50.safetensors")  # w2s-vqa convert-slowfast ...
    sets = ["--set", f"data.slowfast_weights={weights}", "--set", "data.image_size=32"]
    anchor_videos = _clips(tmp_path / "anchor_videos", 5, seed=1)
    pd.DataFrame({"file": [f"v{i}.mp4" for i in range(5)], "mos": [78.0, 69.4, 60.6, 50.2, 39.6]}).to_csv(
        tmp_path / "anchor_mos.csv", index=False)

    assert cli.main(["prepare", "--config", CONFIG, "--inputs", anchor_videos, "--out", str(tmp_path / "anchor_store"),
                     "--workers", "0", *sets]) == 0
    assert cli.main(["anchors", "--store", str(tmp_path / "anchor_store"), "--mos", str(tmp_path / "anchor_mos.csv"),
                     "--out", str(tmp_path / "anchors")]) == 0
    capsys.readouterr()
    my_videos = _clips(tmp_path / "my_videos", 2, seed=2)
    tables = {}
    for mode in ("map", "paper"):
        out = tmp_path / f"scores_{mode}.csv"
        assert cli.main(["score", "--config", CONFIG, "--hf", stage3, "--anchors", str(tmp_path / "anchors"),
                         "--inputs", my_videos, "--out", str(out), "--mode", mode, *sets]) == 0
        result = _last_json(capsys)
        assert (result["scores"], result["videos"], result["skipped"], result["mode"]) == (str(out), 2, 0, mode)
        tables[mode] = pd.read_csv(out).set_index("id")
        assert sorted(tables[mode].index) == ["v0", "v1"]
        assert np.isfinite(tables[mode]["score"]).all()
    assert ((tables["paper"]["score"] >= 0) & (tables["paper"]["score"] <= 100)).all()
    # map: on the anchors' MOS scale, with a 95% interval around each score.
    assert (tables["map"]["low"] <= tables["map"]["score"]).all() and (tables["map"]["score"] <= tables["map"]["high"]).all()


ONE_DEVICE = ["mesh.shape=(1,1,1)", "mesh.num_devices=1", "train.log_every=1", "train.eval_every=0",
              "train.async_checkpoint=False"]


def test_training_asks_the_released_model_the_prompt_scoring_asks(tmp_path):
    from w2s_vqa import prompt as prompt_lib
    from w2s_vqa.config import load_config
    from w2s_vqa.score.student_source import load_for_scoring
    from w2s_vqa.train import loop

    stage3 = ref.write_released(tmp_path / "w2s_stage3")
    tokenizer = prompt_lib.load_tokenizer(stage3)
    # model.prompt "released" (the preset's), and "" (the directory's own: its llava_qwen config).
    for choice in ("released", ""):
        config = load_config(CONFIG, [f"model.hf_dir={stage3}", f"model.prompt='{choice}'", "data.image_size=32",
                                      "data.batch_size=2", *ONE_DEVICE])
        trainer = loop.Trainer(config, str(tmp_path / f"run_{choice or 'own'}"))
        scoring = load_for_scoring(hf_dir=stage3, config=config).prompt
        np.testing.assert_array_equal(trainer.prompt.input_ids, scoring.input_ids)
        # ... and that prompt is the authors' question, not the project's.
        released = prompt_lib.build_pair_prompt(tokenizer, video_token_id=scoring.video_token_id,
                                                tokens_per_video=scoring.tokens_per_video,
                                                question=prompt_lib.RELEASED_QUESTION)
        np.testing.assert_array_equal(trainer.prompt.input_ids, released.input_ids)
        assert trainer.train_step.obj_cfg.kind == "released"


def test_finetune_the_papers_model_on_a_mos_set_in_one_command(tmp_path, capsys):
    from safetensors.numpy import load_file

    from w2s_vqa.train.checkpoint import load_checkpoint_student
    from w2s_vqa.train.logging import read_metrics

    stage3 = ref.write_released(tmp_path / "w2s_stage3")
    weights = _slowfast_weights(tmp_path / "slowfast_r50.safetensors")
    videos = _clips(tmp_path / "my_set", 8, seed=3)
    pd.DataFrame({"file": [f"v{i}.mp4" for i in range(8)], "mos": [80.0 - 6 * i for i in range(8)]}).to_csv(
        tmp_path / "my_set.csv", index=False)
    workdir = tmp_path / "ft"
    sets = [f"data.slowfast_weights={weights}", "data.image_size=32", "data.batch_size=2", "finetune.num_steps=2",
            "finetune.train_fraction=0.6", *ONE_DEVICE]
    # w2s-vqa finetune --config configs/w2s_released.py --hf w2s_stage3 --videos my_set/ --mos my_set.csv ...
    assert cli.main(["finetune", "--config", CONFIG, "--hf", stage3, "--videos", videos, "--mos",
                     str(tmp_path / "my_set.csv"), "--name", "konvid_1k", "--workdir", str(workdir), "--splits", "1",
                     "--anchors", "3", "--bootstrap", "0", *[a for s in sets for a in ("--set", s)]]) == 0
    summary = _last_json(capsys)
    assert summary["hf"] == os.path.abspath(stage3) and summary["checkpoint"] is None
    assert summary["splits"] == 1 and np.isfinite(summary["srcc"]) and np.isfinite(summary["w2s_srcc"])
    results = json.loads((workdir / "results.json").read_text())
    assert results["hf"] == os.path.abspath(stage3) and results["splits"][0]["steps"] == 2

    # The split trained from the released weights with the released trainer's loss.
    train_dir = workdir / "split_00" / "train"
    rows = [r for r in read_metrics(train_dir) if "loss" in r]
    assert len(rows) == 2 and all("sentence_ce" in r and np.isfinite(r["loss"]) for r in rows)
    student, _, _ = load_checkpoint_student(str(train_dir), 2)
    stored = load_file(os.path.join(stage3, "model.safetensors"))
    # The frozen language model is the released one (held in model.dtype bfloat16: one rounding,
    # 2^-8 relative); the motion projector moved from it.
    np.testing.assert_allclose(np.asarray(student.language_model.embed_tokens.embedding[...], np.float32),
                               stored["model.embed_tokens.weight"], rtol=2.0 ** -8)
    kernel = np.asarray(student.motion_projector.linear_1.kernel[...], np.float32)
    released = stored["model.slowfast_projector.0.weight"].T
    assert kernel.shape == released.shape and not np.allclose(kernel, released, rtol=0, atol=1e-7)


def test_continue_the_papers_model_stages_on_a_pool_in_one_command(tmp_path, capsys, monkeypatch):
    from safetensors.numpy import load_file

    from w2s_vqa import prompt as prompt_lib
    from w2s_vqa.labels import pair_table
    from w2s_vqa.labels import sampling as pair_sampling
    from w2s_vqa.labels import weak_teachers
    from w2s_vqa.score import scorer as scorer_lib
    from w2s_vqa.score.anchors import AnchorSet
    from w2s_vqa.stages import run as stages_lib
    from w2s_vqa.store.format import VideoStore
    from w2s_vqa.train.checkpoint import load_checkpoint_student
    from w2s_vqa.train.logging import read_metrics

    stage3 = ref.write_released(tmp_path / "w2s_stage3")
    weights = _slowfast_weights(tmp_path / "slowfast_r50.safetensors")
    data = [f"data.slowfast_weights={weights}", "data.image_size=32"]
    # The pool: three sources, each pristine and resized at two levels (the synthetic pairs
    # stage 1 trains on and stage 2's misranked pairs are drawn from), with the weak
    # teachers' scores (gMAD pairs) and two anchors of the pool.
    assert cli.main(["prepare", "--config", CONFIG, "--inputs", _clips(tmp_path / "pool", 3, seed=4), "--out",
                     str(tmp_path / "pool_store"), "--workers", "0", "--set", "data.distortions='resize:1,3'",
                     *[a for s in data for a in ("--set", s)]]) == 0
    with VideoStore(tmp_path / "pool_store") as store:
        index = store.index
        weak_teachers.score_store(store).to_csv(tmp_path / "teachers.csv", index=False)
        worst = index[index["level"] == index["level"].max()]["id"].iloc[0]
        pristine = index[index["level"] == 0]["id"].iloc[-1]
        AnchorSet.from_store(store, [worst, pristine], [30.0, 70.0]).save(str(tmp_path / "anchors"))
    table = pair_sampling.random_swap(pair_sampling.synthetic_pairs(index), np.random.default_rng(0))
    pair_table.write_pairs(pair_table.make_pair_table(list(table.first_id), list(table.second_id), list(table.label),
                                                      origin="spatial", stage=1), tmp_path / "stage1_pairs.parquet")

    # Every pair prompt the run builds (stage 1's and stage 2's training, the stage-1 student
    # scoring the pool), and the prompt the relabeling scorer is given, are recorded.
    built, relabeling = [], []
    build = prompt_lib.build_pair_prompt
    monkeypatch.setattr(prompt_lib, "build_pair_prompt", lambda *a, **k: built.append(build(*a, **k)) or built[-1])

    class RecordingScorer(scorer_lib.Scorer):
        def __init__(self, student, prompt, *args, **kwargs):
            relabeling.append(prompt)
            super().__init__(student, prompt, *args, **kwargs)

    monkeypatch.setattr(scorer_lib, "Scorer", RecordingScorer)
    capsys.readouterr()
    workdir = tmp_path / "w2s"
    sets = [*data, "data.batch_size=2",
            f"data.store={tmp_path / 'pool_store'}", f"data.pairs={tmp_path / 'stage1_pairs.parquet'}",
            f"stages.anchors={tmp_path / 'anchors'}", f"stages.teachers={tmp_path / 'teachers.csv'}",
            "train.num_steps=2", "stages.num_steps=1", "stages.val_fraction=0.0", "stages.new_pairs=4",
            "stages.synthetic_per_kind=1", "stages.gmad_levels=2", *ONE_DEVICE]
    # w2s-vqa stages --config configs/w2s_released.py --hf w2s_stage3 --workdir w2s --stages 2 --set data.store=...
    assert cli.main(["stages", "--config", CONFIG, "--hf", stage3, "--workdir", str(workdir), "--stages", "2",
                     *[a for s in sets for a in ("--set", s)]]) == 0
    summary = _last_json(capsys)
    assert summary["stopped"] is None and [s["stage"] for s in summary["stages"]] == [1, 2]
    assert [s["steps"] for s in summary["stages"]] == [2, 1]
    results = json.loads((workdir / stages_lib.RESULTS_JSON).read_text())
    assert results["stages"][0]["relabel"]["pairs"] > 0 and results["stages"][0]["relabel"]["scored"] == len(index)

    # Both stages started from the released weights: their frozen language model is the
    # released one (held in model.dtype bfloat16: one rounding, 2^-8 relative), and they
    # trained with the released trainer's loss.
    stored = load_file(os.path.join(stage3, "model.safetensors"))
    for stage in (1, 2):
        student, run_config, _ = load_checkpoint_student(stages_lib.stage_dir(workdir, stage), "latest")
        assert run_config.model.hf_dir == stage3
        np.testing.assert_allclose(np.asarray(student.language_model.embed_tokens.embedding[...], np.float32),
                                   stored["model.embed_tokens.weight"], rtol=2.0 ** -8, err_msg=f"stage {stage}")
        rows = [r for r in read_metrics(stages_lib.stage_dir(workdir, stage)) if "loss" in r]
        assert rows and all("sentence_ce" in r and np.isfinite(r["loss"]) for r in rows)

    # Stage 2's pairs were labelled by the stage-1 student asked the authors' question, and
    # no prompt of the run asked anything else.
    tokenizer = prompt_lib.load_tokenizer(stage3)
    released = build(tokenizer, video_token_id=relabeling[0].video_token_id,
                     tokens_per_video=relabeling[0].tokens_per_video, question=prompt_lib.RELEASED_QUESTION)
    assert len(relabeling) == 1 and len(built) >= 3
    for prompt in relabeling + built:
        np.testing.assert_array_equal(prompt.input_ids, released.input_ids)
