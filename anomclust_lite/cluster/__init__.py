"""anomclust_lite.cluster."""
