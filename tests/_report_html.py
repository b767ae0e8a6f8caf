"""Reading the HTML report in tests without a browser: its embedded data, as the page will draw it.

The page is drawn by its script from the JSON in ``<script type="application/json"
id="report-data">``; :func:`parse` reads that block back (undoing nothing: the JSON
escapes are plain JSON) and lists, at the fitted K, the cluster sections and the
image paths of each (nearest the centre first), like the page's default view.
Browser tests (test_report_browser.py) check the drawn DOM itself.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any, Dict, List

_DATA = re.compile(r'<script type="application/json" id="report-data">(.*?)</script>', re.S)


class ReportParser:
    """The report's data and its default view (fitted K)."""

    def __init__(self, page: str) -> None:
        blocks = _DATA.findall(page)
        assert len(blocks) == 1, "the page must hold exactly one report-data block"
        self.data: Dict[str, Any] = json.loads(blocks[0])
        d = self.data
        at = d["k_fit"] - d["k_min"]
        cut, dist = d["cuts"][at], d["dist"][at]
        self.sections: List[str] = [f"cluster-{c}" for c in range(d["k_fit"])]
        self.figures: Dict[str, List[str]] = {s: [] for s in self.sections}
        order = sorted(range(d["n"]), key=lambda i: (dist[i] is None, dist[i] if dist[i] is not None else 0.0, i))
        for i in order:
            if cut[i] >= 0:
                self.figures[f"cluster-{cut[i]}"].append(d["paths"][i])
        self.images: List[str] = list(d["thumbs"])

    def count(self, field: str) -> int:
        values = self.data.get(field)
        return 0 if values is None else sum(1 for v in values if v is not None and not (isinstance(v, float) and math.isnan(v)))


def parse(page: str) -> ReportParser:
    return ReportParser(page)
