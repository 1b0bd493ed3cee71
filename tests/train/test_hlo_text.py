"""The compiler's text read back (train.hlo_text): collectives of an HLO module, figures of
an out-of-memory error."""

import pytest

from w2s_vqa.train import hlo_text


def test_collectives_are_read_in_each_replica_group_spelling():
    hlo = "\n".join([
        "  %ag = f32[64,128]{1,0} all-gather(f32[8,128]{1,0} %p), replica_groups=[1,8]<=[8], dimensions={0}",
        "  %ar = (f32[1024]{0}, bf16[512]{0}) all-reduce(%a, %b), replica_groups={{0,1},{2,3},{4,5},{6,7}}",
        "  %ags = (bf16[4,256]{1,0}, bf16[16,256]{1,0}) all-gather-start(%x), replica_groups=mesh['axis_0'=4,"
        "'axis_1'=2] {'axis_0'}, dimensions={0}",
        "  %agd = bf16[16,256]{1,0} all-gather-done(%ags)",
        "  %rs = f32[128]{0} reduce-scatter(%g), replica_groups=[2,4]<=[8], dimensions={0}",
        "  %cp = (s32[10]{0}, s32[10]{0}, u32[], u32[]) collective-permute-start(%y), source_target_pairs={{0,1}}",
    ])
    got = hlo_text.collective_bytes(hlo, 8)
    assert got["all-gather"]["count"] == 2
    assert got["all-gather"]["moved"] == pytest.approx(64 * 128 * 4 * 7 / 8 + 16 * 256 * 2 * 3 / 4)
    assert got["all-reduce"]["moved"] == pytest.approx(2 * (1024 * 4 + 512 * 2) * 1 / 2)
    assert got["reduce-scatter"]["moved"] == pytest.approx(128 * 4 * 3)
    assert got["collective-permute"]["moved"] == 40
    assert got["total"]["count"] == 5


def test_the_compilers_out_of_memory_figures_are_read_in_both_spellings():
    gib = 2**30
    assert hlo_text.oom_figures("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
                                "temporaries (76.32G) exceeds available HBM (15.75G).") == (
        pytest.approx(76.32 * gib), pytest.approx(15.75 * gib), "HLO temporaries")
    assert hlo_text.oom_figures("Ran out of memory in memory space hbm. Used 110.97G of 95.74G hbm.")[:2] == (
        pytest.approx(110.97 * gib), pytest.approx(95.74 * gib))
    assert hlo_text.oom_figures("RESOURCE_EXHAUSTED: something else") is None


def test_only_the_out_of_memory_verdict_counts_as_one():
    assert hlo_text.is_out_of_memory("RESOURCE_EXHAUSTED: Ran out of memory in memory space hbm.")
    assert hlo_text.is_out_of_memory("XLA:TPU compile permanent error. Ran out of memory ...")
    assert not hlo_text.is_out_of_memory("INVALID_ARGUMENT: Shapes must be equal rank")
