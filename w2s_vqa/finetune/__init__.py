"""MOS fine-tuning: a weak-to-strong student trained further on pairs of one MOS-labeled set,
evaluated on held-out videos of that set, over N random splits (`w2s-vqa finetune`).

docs/method.md (MOS fine-tuning, Compare2Score's recipe): pairs within one labeled set, labelled
by the five-way rule from MOS differences; random 80/20 splits by video; the field reports
the median over 10 splits. In a work directory W:

    W/finetune.json     what the run is (checkpoint and step, the set's table digest, the
                        split and pair settings, the config): a rerun that changes any
                        of them but SAFE_KEYS (more splits among them) is refused, naming
                        every difference; so is a work directory of `w2s-vqa stages`
    W/manifest.csv      the set's videos (id = the table's `file`), decoded once into
    W/store/            a store made with the weak-to-strong run's data settings (frames,
                        image size, motion features), pristine only
    W/split_NN/         per split s (labels.mos_pairs.split_by_video):
        train_pairs.parquet  MOS pairs among the training videos (labels.mos_pairs)
        test_pairs.parquet   MOS pairs among the test videos: validation while training
                             (config.evals "val"), never used to choose a checkpoint
        anchors/             K anchors picked among the TRAINING videos by their MOS
                             (score.anchors.pick_anchors): a test video is never an anchor
        train/               the Trainer's run: step 0 = the weak-to-strong checkpoint's
                             parameters (train.init_from), a fresh optimizer unless
                             finetune.fresh_optimizer is False
        w2s_scores.csv       the test videos scored by the weak-to-strong checkpoint and
        finetuned_scores.csv by the split's final student, against the split's anchors
                             (score.scorer, Thurstone scores on the anchors' MOS scale)
        eval/                score.evaluate's report of both on the test videos: SRCC,
                             PLCC, KRCC, fitted PLCC, intervals, plots
        result.json          the split's figures; written last: its presence marks the
                             split finished, and a rerun skips it
    W/results.json      every split's figures before and after, and their MEDIAN over the
    W/results.md        splits (the headline), rewritten after each split

Resuming: rerun the same command. The store keeps its finished shards, finished splits are
skipped, a split killed while training resumes from its own latest checkpoint (Trainer),
and scoring resumes shard by shard (score_store's parts). Raising finetune.splits (or
--splits) later adds splits: split s is the same draw whatever the number of splits.

The package: `inputs` (the set, the checkpoint, the configs of a run and of a split),
`record` (W/finetune.json: the run a work directory serves), `run` (`finetune`, the
splits' pairs, anchors, training and scoring), `results` (figures, medians, results.md).
"""

from w2s_vqa.finetune.inputs import (MANIFEST_FILE, MIN_TEST_VIDEOS, SPLIT_RESULT, STORE_DIR, TEST_PAIRS,
                                     TRAIN_PAIRS, FinetuneError, base_config, check_inputs, read_set,
                                     hf_base_config, resolve_checkpoint, split_config, split_dir)
from w2s_vqa.finetune.record import SAFE_KEYS, run_differences
from w2s_vqa.finetune.results import (AFTER, BEFORE, FIGURES, MODELS, RESULTS_JSON, RESULTS_MD, markdown,
                                      median_figures)
from w2s_vqa.finetune.run import finetune

__all__ = ["AFTER", "BEFORE", "FIGURES", "MANIFEST_FILE", "MIN_TEST_VIDEOS", "MODELS", "RESULTS_JSON", "RESULTS_MD",
           "SAFE_KEYS", "SPLIT_RESULT", "STORE_DIR", "TEST_PAIRS", "TRAIN_PAIRS", "FinetuneError", "base_config",
           "check_inputs", "finetune", "markdown", "median_figures", "read_set", "resolve_checkpoint",
           "run_differences", "split_config", "split_dir", "hf_base_config"]
