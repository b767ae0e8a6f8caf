"""anomclust_lite.core."""
