"""Stopgap: the two pair-table names stages/finetune.py still reads from here.

The pair table lives in labels/pair_table.py and the order swap in labels/sampling.py;
delete this module once the fine-tuning code imports them from there.
"""

from w2s_vqa.labels.pair_table import write_pairs
from w2s_vqa.labels.sampling import random_swap

__all__ = ["random_swap", "write_pairs"]
