"""The student's labels and the synthetic pairs it misranks (labels/misranked.py): labels at
the five-way rule's boundaries; the misranked pairs are exactly those the student orders
wrongly (both rules, by scores and by its own pairwise verdict), with their level-gap labels."""

import numpy as np
import pandas as pd
import pytest

from w2s_vqa.labels import misranked
from w2s_vqa.labels import sampling as pair_sampling
from w2s_vqa.labels.mining_inputs import MiningError
from w2s_vqa.prompt import LEVEL_INDEX

SUPERIOR, BETTER, SIMILAR, WORSE, INFERIOR = (LEVEL_INDEX[w] for w in ("superior", "better", "similar", "worse",
                                                                       "inferior"))
DISTORTIONS = (("blur", "spatial"), ("stutter", "temporal"), ("h264", "compression"))


# ---------------------------------------------------------------- student labels

def test_student_labels_at_the_rule_boundaries():
    # stderr 3 and 4: s_d = 5 exactly. d on each boundary and beside it.
    d = np.array([11.0, 10.0, 6.0, 5.0, 0.0, -4.0, -5.0, -9.0, -10.0, -11.0])
    labels = misranked.student_labels(np.full(10, 50.0), np.full(10, 3.0), 50.0 + d, np.full(10, 4.0))
    assert labels.dtype == np.int8
    assert labels.tolist() == [SUPERIOR, BETTER, BETTER, SIMILAR, SIMILAR, SIMILAR, WORSE, WORSE, INFERIOR, INFERIOR]
    # No spread: equal scores are similar, any difference decisive.
    zero = np.zeros(3)
    assert misranked.student_labels(np.full(3, 50.0), zero, np.array([50.0, 50.5, 49.5]), zero).tolist() == [
        SIMILAR, SUPERIOR, INFERIOR]


def test_student_labels_refuse_a_paper_mode_table():
    with pytest.raises(ValueError, match="'paper' mode"):
        misranked.student_labels([1.0], [np.nan], [2.0], [0.1])
    with pytest.raises(ValueError, match="not finite"):
        misranked.student_labels([np.nan], [0.1], [2.0], [0.1])


# ---------------------------------------------------------------- misranked synthetic pairs

def make_pool(sources=30, seed=0, teachers=("dover", "qalign")):
    """A pool of `sources` sources, each with 3 simulators x 3 levels; the student's and the
    teachers' scores fall with the level, with noise, so some synthetic pairs are misranked."""
    rng = np.random.default_rng(seed)
    rows = []
    for s in range(sources):
        rows.append((f"src{s}", f"src{s}", "", "", 0))
        rows += [(f"src{s}~{name}-{level}", f"src{s}", name, kind, level)
                 for name, kind in DISTORTIONS for level in (1, 2, 3)]
    index = pd.DataFrame(rows, columns=["id", "source_id", "distortion", "kind", "level"]).astype({"level": "int32"})
    quality = np.repeat(rng.normal(size=sources), 10) - 0.4 * index["level"].to_numpy()
    student = pd.DataFrame({"id": index["id"], "score": 60 + 10 * (quality + rng.normal(scale=0.4, size=len(index))),
                            "stderr": rng.uniform(0.5, 3.0, size=len(index))})
    teacher = pd.concat([pd.DataFrame({"video_id": index["id"], "teacher": name,
                                       "score": quality + rng.normal(scale=0.8, size=len(index))})
                         for name in teachers], ignore_index=True)
    return index, student, teacher


def synthetic_candidates(index):
    return pair_sampling.synthetic_pairs(index, stage=2)


@pytest.mark.parametrize("rule", ["direction", "level"])
def test_misranked_synthetic_pairs_are_exactly_those_the_student_gets_wrong(rule):
    index, student, _ = make_pool(sources=6)
    candidates = pair_sampling.random_swap(synthetic_candidates(index), np.random.default_rng(0))
    student.loc[3, "score"] = np.nan  # one video unscored: its pairs are neither kept nor misranked
    student.loc[4, "score"] = student.loc[0, "score"]  # a tie with its pristine source
    by_id = student.set_index("id")
    expected = []
    for row in candidates.itertuples():
        a, b = by_id.loc[row.first_id], by_id.loc[row.second_id]
        if np.isnan(a.score) or np.isnan(b.score):
            continue
        if rule == "direction":
            says_better = row.label in (SUPERIOR, BETTER)
            wrong = not (b.score > a.score) if says_better else not (b.score < a.score)
        else:
            d, s_d = b.score - a.score, np.sqrt(a.stderr**2 + b.stderr**2)
            level = (SUPERIOR if d > 2 * s_d else BETTER if d > s_d else SIMILAR if d > -s_d
                     else WORSE if d > -2 * s_d else INFERIOR)
            wrong = level != row.label
        if wrong:
            expected.append((row.first_id, row.second_id, row.label))
    found = misranked.misranked_synthetic(candidates, student, rule=rule)
    got = list(zip(found.pairs["first_id"], found.pairs["second_id"], found.pairs["label"]))
    assert got == expected and 0 < len(got) < len(candidates)
    # Video 3, src0~blur-3, is in three pairs: with the pristine src0, blur-1 and blur-2.
    assert found.scored.sum() == len(candidates) - 3
    assert list(found.pairs.columns) == list(candidates.columns)
    assert (found.pairs["origin"] == candidates["origin"][found.misranked].to_numpy()).all()
    if rule == "direction":
        tie = (candidates["first_id"].isin([student.id[0], student.id[4]])
               & candidates["second_id"].isin([student.id[0], student.id[4]])).to_numpy()
        assert found.misranked[tie].all()


def test_misranked_synthetic_refuses_an_unknown_rule_and_a_missing_column():
    index, student, _ = make_pool(sources=2)
    with pytest.raises(ValueError, match="misranked rule"):
        misranked.misranked_synthetic(synthetic_candidates(index), student, rule="sign")
    with pytest.raises(ValueError, match=r"student score table lacks column\(s\) \['stderr'\]"):
        misranked.misranked_synthetic(synthetic_candidates(index), student.drop(columns="stderr"), rule="level")



def test_misranked_by_pairs_reads_the_students_own_verdict():
    """'direction': P on the wrong side of 0.5 (0.5 itself wrong); 'level': the argmax logit
    differs from the level-gap label; a candidate without a prediction is not scored."""
    from w2s_vqa.prompt import LEVELS

    index = pd.DataFrame({"id": ["s", "s~blur-1", "s~blur-3"], "source_id": ["s"] * 3,
                          "distortion": [None, "blur", "blur"], "kind": [None, "spatial", "spatial"],
                          "level": [0, 1, 3]})
    candidates = misranked.synthetic_candidates(index)
    assert list(zip(candidates.first_id, candidates.second_id)) == [("s", "s~blur-1"), ("s", "s~blur-3"),
                                                                    ("s~blur-1", "s~blur-3")]
    # Less distorted first: every label says the second is worse (worse / inferior / inferior).
    logits = np.full((3, 5), -5.0)
    logits[0, LEVELS.index("worse")] = 1.0        # right level
    logits[1, LEVELS.index("worse")] = 1.0        # right direction, wrong level (inferior)
    logits[2, LEVELS.index("better")] = 1.0       # wrong direction
    predictions = pd.DataFrame({"first_id": candidates.first_id, "second_id": candidates.second_id,
                                "p": [0.2, 0.5, 0.9],
                                **{f"logit_{w}": logits[:, i] for i, w in enumerate(LEVELS)}})
    wrong, scored = misranked.misranked_by_pairs(candidates, predictions, rule="direction")
    assert wrong.tolist() == [False, True, True] and scored.all()
    wrong, _ = misranked.misranked_by_pairs(candidates, predictions, rule="level")
    assert wrong.tolist() == [False, True, True]
    wrong, scored = misranked.misranked_by_pairs(candidates, predictions.iloc[:1], rule="direction")
    assert scored.tolist() == [True, False, False] and not wrong.any()
    with pytest.raises(MiningError, match="predicted twice"):
        misranked.misranked_by_pairs(candidates, pd.concat([predictions, predictions.iloc[:1]]))
