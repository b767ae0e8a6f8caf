"""anomclust_lite.files."""
