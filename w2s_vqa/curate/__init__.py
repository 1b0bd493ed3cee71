"""Pool curation: quality-related metrics per video, and the selection of K videos whose metric
histograms match a reference set's (docs/method.md, "Pool").

    metrics   the nine metrics of one video (:func:`video_metrics`)
    extract   the metrics table of a folder, manifest or store, resumable, on a process pool
    select    the grouped mixed-integer program (:func:`select`)
    report    the chosen manifest, report.json and the histogram figure
"""
