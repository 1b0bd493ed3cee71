"""Pair origins: one list of names, their batch codes, and the simulators' kinds."""

import numpy as np
import pytest

from w2s_vqa.labels import origins
from w2s_vqa.labels.pair_table import PairTableError, make_pair_table, validate_pair_table
from w2s_vqa.video import distort


def test_batch_codes_follow_the_one_list_of_origins():
    assert origins.ORIGINS == ("teacher", "spatial", "temporal", "compression", "student", "mos")
    codes = origins.origin_codes(["teacher", "compression", "student:1", "student:12", "spatial", "temporal", "mos"])
    assert codes.dtype == np.int32
    assert [origins.ORIGINS[c] for c in codes] == ["teacher", "compression", "student", "student", "spatial",
                                                   "temporal", "mos"]


def test_every_simulator_kind_is_a_synthetic_origin():
    assert {sim.kind for sim in distort.SIMULATORS.values()} == set(origins.SYNTHETIC)


def test_student_origins_parse_back_to_their_stage_and_odd_ones_are_refused():
    assert origins.parse(origins.student_origin(3)) == ("student", 3)
    assert origins.parse("teacher") == ("teacher", None)
    for bad in ("student", "student:0", "student:x", "Teacher", "human", "spatial "):
        assert not origins.is_known(bad)
        with pytest.raises(origins.OriginError, match="unknown pair origin"):
            origins.origin_codes(["teacher", bad])
    with pytest.raises(ValueError, match="stage"):
        origins.student_origin(0)


def test_the_pair_table_check_uses_the_same_rule():
    table = make_pair_table(["a", "b", "c"], ["d", "e", "f"], [0, 1, 2], origin="teacher", stage=1)
    table["origin"] = ["student:2", "student:0", "compression"]
    with pytest.raises(PairTableError, match=r"unknown origin.*row 2: 'student:0'"):
        validate_pair_table(table)
