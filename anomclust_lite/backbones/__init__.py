"""anomclust_lite.backbones."""
