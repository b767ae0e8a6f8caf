"""The report: one self-contained HTML page to review a clustering, and the review file it exports.

- :mod:`.data` — what the page shows (:class:`ReportImage`, :class:`ReportRun`);
- :mod:`.views` — the cut of the tree at every K, centre distances, representatives, map, neighbours;
- :mod:`.payload` — the JSON the page is drawn from; :mod:`.page` — the HTML document;
- :mod:`.thumbs`, :mod:`.heatmap`, :mod:`.masks` — thumbnails, heat maps on one scale, mask outlines;
- :mod:`.charts` — the dendrogram / cluster-size overview images;
- :mod:`.review` — the exported review file (CSV/JSON) and its reader.
"""

from .data import ReportImage, ReportRun
from .page import render_report
from .review import Review, ReviewImage, read_review
from .thumbs import image_data_uri

__all__ = ["ReportImage", "ReportRun", "render_report", "Review", "ReviewImage", "read_review", "image_data_uri"]
