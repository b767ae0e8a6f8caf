"""anomclust_lite.estimator."""
