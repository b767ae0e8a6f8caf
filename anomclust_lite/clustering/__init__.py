"""anomclust_lite.clustering: off-the-shelf clustering of images from embeddings or distances.

- :mod:`.dispatch` -- :func:`~.dispatch.cluster` (one entry for every
  method) and :func:`~.dispatch.linkage_matrix` (hierarchical methods).
- :mod:`.kmeans`, :mod:`.gmm`, :mod:`.kmedoids`, :mod:`.spectral` -- the
  non-hierarchical methods.
- :mod:`.auto_k` -- choosing the number of clusters (L-method on Ward merge
  costs, silhouette) and :func:`~.auto_k.cut_linkage`, the one way a tree is
  cut into exactly ``k`` clusters.
- :mod:`.consensus` -- consensus Ward: the co-association of several
  partitions clustered again (the estimator's default, beyond the paper).
- :mod:`.labels` -- :func:`~.labels.renumber_labels`, the one way cluster ids
  are made canonical (by first appearance or by size).
"""
