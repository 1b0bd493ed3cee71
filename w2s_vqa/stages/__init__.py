"""Weak-to-strong stages: the stage-k student relabels the pool (hard cases by misranked
synthetic pairs and gMAD), stage k+1 trains from stage k; and MOS fine-tuning."""
