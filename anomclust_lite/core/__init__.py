"""anomclust_lite.core: the method on bags of patch embeddings, with NumPy and SciPy only.

Read in this order:

- :mod:`.pipeline` -- :func:`~.pipeline.embed_bags`, the one wiring of the
  steps below: bags -> patch scores -> weights -> weighted-average embeddings.
- :mod:`.kernel` -- the blocked, memory-bounded nearest-patch kernel (one
  SGEMM per image pair) that every score and Hausdorff distance runs on.
- :mod:`.scores` -- patch anomaly scores: Eq. 5 (aggregates over the other
  images, :class:`~.scores.ScoreAggregator`), Eq. 7 (``reference``
  subsample), Eq. 6 (nearest labelled normal patch).
- :mod:`.weights` -- softmax weights (Eq. 5/6), top-k (Eq. 8/9), uniform,
  ground-truth masks on the patch grid.
- :mod:`.distances` -- weighted-average embeddings and their Euclidean
  distances (Eq. 3).
- :mod:`.hausdorff` -- the Hausdorff family of bag distances (Appendix C).
- :mod:`.sweeps` -- one kernel pass for many settings (all aggregates, all
  Hausdorff variants, nested normal subsets), equal to the direct functions.
- :mod:`.normalize`, :mod:`.validation`, :mod:`.defaults` -- L2
  normalisation, argument checks, the chosen defaults.
"""
