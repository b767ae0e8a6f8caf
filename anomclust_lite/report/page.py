"""The report page: one self-contained HTML file that works offline.

:func:`render_report` turns a :class:`~anomclust_lite.report.data.ReportRun`
into a complete HTML document: the page's script and style (package data
files ``assets/report.js`` and ``assets/report.css``) inline, the data as JSON
in a ``<script type="application/json">`` block, and a Content-Security-Policy
that lets the page load nothing from anywhere (only ``data:``/``blob:``
images, its own inline script and style by hash; no connections, fonts or
frames).

Stable structure for tools and tests (built by the script at load):

- each visible cluster is a ``section.cluster`` with ``data-cluster`` (the
  cluster id, or ``good`` / ``new`` for the good and new-type groups);
- each gallery thumbnail is an ``img`` with ``data-path``;
- the 2-D map is the element ``#map``;
- the URL fragment ``#k=N`` opens the page at K = N; ``html[data-ready]`` is
  set once the page is drawn.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
from importlib import resources
from typing import Dict

from .data import ReportRun, check_run
from .payload import build_payload, display_text

__all__ = ["render_report", "embed_json", "asset"]

_TEMPLATE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{csp}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<title>{title}</title>
<style>{css}</style></head>
<body>
<header class="top">
<h1 id="title">{title}</h1>
<p id="summary" class="muted">This report needs JavaScript to draw its galleries.</p>
<div id="warnings" role="status"></div>
<div class="controls">
<label for="k-slider">clusters K = <output id="k-value" for="k-slider"></output></label>
<input type="range" id="k-slider" step="1" aria-label="number of clusters K">
<button type="button" id="export-csv">export CSV</button>
<button type="button" id="export-json">export JSON</button>
<button type="button" id="forget-edits" title="names and moves are kept in this browser until reset">reset names and moves</button>
<label><input type="checkbox" id="gallery-heat"> heat maps on thumbnails</label>
<div id="colour-bar" class="colour-bar"></div>
</div>
</header>
<main>
<div class="overview">
<div class="map-box"><canvas id="map" role="img" aria-label="2-D map of the images, coloured by cluster"></canvas><div id="map-tip"></div></div>
<div class="side">
<table class="facts" id="facts"></table>
<details id="overview-box"><summary>tree at the fitted K</summary></details>
</div>
</div>
<nav id="cluster-nav" aria-label="clusters"></nav>
<div id="groups"></div>
</main>
<dialog id="zoom" aria-labelledby="zoom-title">
<div class="zoom-bar">
<strong id="zoom-title"></strong>
<label><input type="checkbox" id="heat-toggle"> heat map (h)</label>
<label><input type="checkbox" id="outline-toggle"> defect mask outline</label>
<button type="button" id="zoom-prev" aria-label="previous image">&larr;</button>
<button type="button" id="zoom-next" aria-label="next image">&rarr;</button>
<button type="button" id="zoom-close">close (Esc)</button>
</div>
<div class="zoom-body"><canvas id="zoom-canvas"></canvas><div class="zoom-info" id="zoom-info"></div></div>
</dialog>
<script type="application/json" id="report-data">{data}</script>
<script>{js}</script>
</body></html>
"""

_ESCAPES = {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026"}


def asset(name: str) -> str:
    """Text of the package data file ``assets/<name>``."""
    return resources.files(__package__).joinpath("assets", name).read_text(encoding="utf-8")


def embed_json(data: object) -> str:
    """``data`` as JSON that is safe inside a ``<script>`` element.

    ASCII only (so U+2028/U+2029 and every other non-ASCII character are
    ``\\uXXXX`` escapes) with ``<``, ``>`` and ``&`` escaped, so no text in it
    can close the element or open a comment; NaN is refused.

    Examples
    --------
    >>> embed_json({"p": "</script><!--\\u2028"})
    '{"p":"\\\\u003c/script\\\\u003e\\\\u003c!--\\\\u2028"}'
    """
    text = json.dumps(data, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    for ch, esc in _ESCAPES.items():
        text = text.replace(ch, esc)
    return text


def _sha256(text: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode("ascii") + "'"


def _csp(js: str, css: str) -> str:
    policy: Dict[str, str] = {
        "default-src": "'none'",
        "img-src": "data: blob:",
        "style-src": _sha256(css),
        "script-src": _sha256(js),
        "base-uri": "'none'",
        "form-action": "'none'",
    }
    return "; ".join(f"{k} {v}" for k, v in policy.items())


def render_report(run: ReportRun) -> str:
    """Render ``run`` as one self-contained HTML document.

    Examples
    --------
    >>> from anomclust_lite.report import ReportImage, ReportRun
    >>> page = render_report(ReportRun([ReportImage("a.png", 0, "data:,"), ReportImage("b.png", 0, "data:,")], k=1))
    >>> page.startswith("<!DOCTYPE html>"), '"paths":["a.png","b.png"]' in page
    (True, True)
    """
    run = check_run(run)
    js, css = asset("report.js"), asset("report.css")
    if "</script" in js.lower() or "</style" in css.lower():
        raise RuntimeError("the report's assets must not contain </script or </style")
    return _TEMPLATE.format(
        csp=html.escape(_csp(js, css), quote=False),  # no double quote can occur: hashes and keywords only
        title=html.escape(display_text(run.title), quote=True),
        css=css,
        js=js,
        data=embed_json(build_payload(run)),
    )
