"""anomclust_lite.report.html."""
