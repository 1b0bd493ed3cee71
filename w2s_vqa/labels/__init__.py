"""Labelled video pairs: from scores and severity levels to the pair tables training reads.

    rules          the labelling rules: five-way teacher rule, soft targets, level gap, mirroring
    pair_table     the pair table's schema, checks and files (Parquet, CSV, JSON lines)
    sampling       teacher and synthetic pairs, the split by source, random order
    origins        the origin names of a pair's label and their batch codes
    teachers       weak teachers' score tables, checked and fused per video
    weak_teachers  built-in weak teachers computed from pixels
    build          a store's train and val pair tables (`w2s-vqa pairs`)
    mos_pairs      pairs within one MOS-labeled set, for MOS fine-tuning
    misranked      the student's labels, and the synthetic pairs it misranks
    gmad           gMAD pairs: where two models disagree most
    mining         a weak-to-strong stage's new pairs, mixing the two
    mining_inputs  the tables mining reads, checked

Video tables come in the video store's vocabulary: the store's index (`id`, `source_id`,
`distortion`, `kind`, `level`) and score tables (`id`, ...) are passed as they are; teacher
score tables keep their file's `video_id`.
"""
