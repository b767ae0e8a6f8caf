"""anomclust_lite.features."""
