"""The pair table (labels/pair_table.py): every problem in one message, and a round trip
through each file format."""

import numpy as np
import pandas as pd
import pytest

from tests.labels.test_sampling import random_fused, store_index
from w2s_vqa.labels.origins import student_origin
from w2s_vqa.labels.pair_table import PAIR_COLUMNS, PairTableError, read_pairs, validate_pair_table, write_pairs
from w2s_vqa.labels.sampling import label_teacher_pairs, synthetic_pairs

def test_pair_table_validation_lists_every_problem():
    bad = pd.DataFrame({
        "first_id": ["a", "", "c", "d", "e", "f"],
        "second_id": ["b", "b", "c", None, "x", "y"],
        "label": [0, 2, 5, 1, -1, 3],
        "origin": ["teacher", "spatial", "student:2", "student:", "blur", "compression"],
        "stage": [1, 1, 2, 0, 1, 1],
        "weight": [1.0, np.nan, 1.0, 1.0, -0.5, np.inf],
        "d": [0.5, np.nan, np.inf, "high", None, -1.0],
        "s_d": [0.1, np.nan, 0.2, -0.3, None, np.nan],
    })
    with pytest.raises(PairTableError) as caught:
        validate_pair_table(bad, "pairs.parquet", known_ids={"a", "b", "c", "d", "f", "y"})
    message = str(caught.value)
    assert message.startswith("pairs.parquet: 16 problem(s) in the pair table (rows are data rows counted from 1, "
                              "the header not counted):")
    assert "empty first_id (1): row 2" in message
    assert "empty second_id (1): row 4" in message
    assert "a video compared with itself (1): row 3: 'c'" in message
    assert "(2): row 3: 5; row 5: -1" in message  # labels
    assert "(2): row 4: 'student:'; row 5: 'blur'" in message  # origins
    assert "stage not an integer >= 1 (1): row 4: 0" in message
    assert "weight not a finite number (2): row 2: nan; row 6: inf" in message
    assert "negative weight (1): row 5: -0.5" in message
    assert "d not a finite number (leave it empty where a pair has none) (2): row 3: inf; row 4: 'high'" in message
    assert "negative s_d (a standard deviation) (1): row 4: -0.3" in message
    # Ids the store lacks are in the same report as the bad labels, not a later round.
    assert "video ids the video store does not hold (used by 1 pair(s)) (2): 'e' (row 5); 'x' (row 5)" in message
    assert caught.value.unknown_ids == ["e", "x"]
    with pytest.raises(PairTableError, match=r"missing columns.*\(2\): 'stage'; 'weight'"):
        validate_pair_table(bad.drop(columns=["stage", "weight"]))


@pytest.mark.parametrize("suffix", [".parquet", ".csv", ".jsonl"])
def test_pair_tables_round_trip_through_every_format(tmp_path, suffix):
    teacher = label_teacher_pairs(random_fused(4), ["v0000", "v0001"], ["v0002", "v0003"], stage=2,
                                  origin=student_origin(1), weight=0.5)
    synthetic = synthetic_pairs(store_index(sources=("007", "NA"), simulators=(("blur", "spatial", 2),)))
    pairs = pd.concat([teacher, synthetic], ignore_index=True)  # d, s_d, source_id missing in some rows
    path = tmp_path / f"pairs{suffix}"
    write_pairs(pairs, path)
    back = read_pairs(path)
    assert list(back.columns[:len(PAIR_COLUMNS)]) == list(PAIR_COLUMNS)
    pd.testing.assert_frame_equal(back, pairs, check_exact=True)
    assert back["label"].dtype == np.int8 and back["weight"].dtype == np.float32
    with pytest.raises(PairTableError, match="unknown pair table format"):
        write_pairs(pairs, tmp_path / "pairs.xlsx")
