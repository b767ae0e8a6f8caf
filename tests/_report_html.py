"""Parsing the HTML report in tests: cluster sections, their figures, images and text."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Dict, List


class ReportParser(HTMLParser):
    """Collects cluster sections and the figures inside each."""

    def __init__(self) -> None:
        super().__init__()
        self.sections: List[str] = []
        self.figures: Dict[str, List[str]] = {}
        self.images: List[str] = []
        self.text: List[str] = []

    def handle_starttag(self, tag, attrs):  # type: ignore[no-untyped-def]
        a = dict(attrs)
        if tag == "section" and a.get("class") == "cluster":
            self.sections.append(a["id"])
            self.figures[a["id"]] = []
        elif tag == "figure":
            self.figures[self.sections[-1]].append(a["data-path"])
        elif tag == "img":
            self.images.append(a["src"])

    def handle_data(self, data):  # type: ignore[no-untyped-def]
        self.text.append(data)


def parse(page: str) -> ReportParser:
    p = ReportParser()
    p.feed(page)
    p.close()
    return p
