"""anomclust_lite.cli.main."""
