"""A student ready to score: its weights, its pair prompt and a key naming those weights.

    checkpoint (a training run's workdir or its checkpoints/ folder, a step)
    or hf_dir (an export or a Hugging Face LLaVA-OneVision directory)
      -> Student, placed on the mesh
      -> the tokenizer the student was trained with (the run config's model.tokenizer,
         or the directory's own tokenizer.json)
      -> PairPrompt (prompt.build_pair_prompt), with the student's video token and
         tokens per video, and the question the model is asked in
      -> key: what a scoring work directory and an anchor matrix are tied to
         (score.batch refuses to resume another student's parts)

`w2s-vqa score`, `eval`, `stages` and the demo load their students here.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import jax
import ml_collections

from w2s_vqa import prompt as prompt_lib
from w2s_vqa import workdir as workdir_lib
from w2s_vqa.convert import export_files
from w2s_vqa.models import student as student_lib
from w2s_vqa.store.settings import Settings


class ScoringStudent(NamedTuple):
    """What `load_for_scoring` gives.

    student: the Student; prompt: its PairPrompt; key: a string naming the weights (for
    a checkpoint its absolute path, the step and the step folder's modification time, so
    that a run retrained in place differs; for a directory its absolute path and each
    *.safetensors file's modification time); run_config: the checkpoint's run config
    (None for a directory); step: the checkpoint's step (None for a directory); settings:
    how the student's input videos were made (store.settings.Settings: the run config's
    data.* for a checkpoint, the export's w2s_vqa.json for a directory, nothing recorded
    for a plain Hugging Face directory), which anchors and stores must fit.
    """

    student: student_lib.Student
    prompt: prompt_lib.PairPrompt
    key: str
    run_config: ml_collections.ConfigDict | None
    step: int | None
    settings: Settings


def load_for_scoring(*, checkpoint: str | None = None, hf_dir: str | None = None, step: int | str | None = None,
                     mesh: jax.sharding.Mesh | None = None, config=None) -> ScoringStudent:
    """The student of a checkpoint or of a directory, its pair prompt and its key.

    Exactly one of `checkpoint` (a training run's workdir or its checkpoints/ folder;
    `step` a number, "latest" or None for the latest, or "best") and `hf_dir` (read by
    convert.hf.load_student; `step` must be None). The parameters are placed on `mesh`
    as the run config's rules (a checkpoint) or the student's own rules (a directory)
    say; default: one device. The prompt's question is convert.export_files.prompt_question
    of the tokenizer directory with the first model.prompt set of `config` (the verb's run
    config, or None) and of a checkpoint's run config, so a checkpoint is asked what it
    was trained with (train.prompts); else the directory's own (an export's w2s_vqa.json,
    the authors' question for their released layout), else prompt.QUESTION. `config` also
    gives the video shape (data.num_frames, data.num_motion_chunks) of the authors'
    released checkpoint, which records none; without it, the directory's own shape.
    Raises ValueError when not exactly one source is
    given, FileNotFoundError for a missing checkpoint, step or directory file, and what
    train.checkpoint.load_checkpoint_student, convert.hf.load_student and
    prompt.load_tokenizer raise.
    """
    if (checkpoint is None) == (hf_dir is None):
        raise ValueError("load_for_scoring takes a checkpoint or an hf_dir, exactly one "
                         f"(got checkpoint={checkpoint!r}, hf_dir={hf_dir!r})")
    if checkpoint is not None:
        from w2s_vqa.models import config as model_config_lib
        from w2s_vqa.train.checkpoint import checkpoint_directory, load_checkpoint_student

        student, run_config, step = load_checkpoint_student(checkpoint, step, mesh=mesh)
        saved = workdir_lib.join(checkpoint_directory(checkpoint), str(step))
        stamp = workdir_lib.stamp(saved)  # a run retrained in place differs
        key = f"checkpoint:{workdir_lib.absolute(checkpoint)}:step {step}:{stamp}"
        tokenizer_dir = model_config_lib.tokenizer_dir(run_config)
        settings = Settings.from_json(run_config.data)
    else:
        from w2s_vqa.convert import hf, llava_next

        if step is not None:
            raise ValueError(f"step={step!r} names a checkpoint's step; {hf_dir} is a directory of one student")
        shape = {}
        if config is not None and llava_next.is_llava_qwen_dir(hf_dir):
            shape = dict(num_frames=config.data.num_frames, num_motion_chunks=config.data.num_motion_chunks)
        student, run_config = hf.load_student(hf_dir, mesh=mesh, **shape), None
        stamps = sorted((name, os.stat(os.path.join(hf_dir, name)).st_mtime_ns)
                        for name in os.listdir(hf_dir) if name.endswith(".safetensors"))
        key = f"hf:{workdir_lib.absolute(hf_dir)}:{stamps}"
        tokenizer_dir = hf_dir
        settings = Settings.from_json(export_files.read_settings(hf_dir))

    # The verb's choice, else the one the checkpoint trained with (train.prompts asks the same
    # of its run config): a stage's student relabels the pool with the question it learnt.
    choice = str(config.model.get("prompt", "") or "") if config is not None else ""
    if not choice and run_config is not None:
        choice = str(run_config.model.get("prompt", "") or "")
    question = export_files.prompt_question(tokenizer_dir, choice)
    prompt = prompt_lib.build_pair_prompt(prompt_lib.load_tokenizer(tokenizer_dir),
                                          video_token_id=student.cfg.video_token_index,
                                          tokens_per_video=student.cfg.tokens_per_video, question=question)
    return ScoringStudent(student, prompt, key, run_config, step, settings)
