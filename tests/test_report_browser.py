"""The report page in a real browser: Debian's headless Chromium over the DevTools pipe.

Skipped only when no Chromium is installed (``.ci/run`` installs Debian's
``chromium`` package when it is missing).
"""

from __future__ import annotations

import csv
import io
import json
import time
from pathlib import Path
from typing import Iterator, List

import pytest

from anomclust_lite.files.safe_text import csv_cell
from anomclust_lite.report import ReportImage, ReportRun, read_review, render_report
from anomclust_lite.report.review import parse_review, review_csv

from _browser import Browser, Page, find_chromium
from _report_html import parse

pytestmark = pytest.mark.skipif(find_chromium() is None,
                                reason="headless Chromium not installed (apt-get install chromium; .ci/run does)")

HOSTILE = 'odd/<img src=x onerror="window.pwned=1">\u2028\'"&amp;.png'
NOTE = 'fitted: 24 images, 62 % <img src=x onerror="window.pwned=1">'
SECTIONS = "[...document.querySelectorAll('section.cluster')]"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    import bench_report as bench  # tools/ is on the test path (pyproject: pythonpath)
    run = bench.synthetic_run(90, k=5, seed=3, k_max=9, title="browser test")
    images = list(run.images)
    images[7] = ReportImage(HOSTILE, images[7].cluster, images[7].thumbnail, label=images[7].label,
                            distance=images[7].distance, score=images[7].score, confidence=0.1,
                            anomaly_score=0.5, is_good=images[7].is_good, heat=images[7].heat)
    fields = {f: getattr(run, f) for f in run.__dataclass_fields__}
    fields["images"] = images
    fields["cluster_notes"] = {0: NOTE}
    path = tmp_path_factory.mktemp("report") / "report.html"
    path.write_text(render_report(ReportRun(**fields)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with Browser() as b:
        yield b


def open_page(browser: Browser, report: Path, fragment: str = "", *, keep_edits: bool = False) -> Page:
    """A new tab on ``report``; unless ``keep_edits``, without the names and moves earlier tests saved."""
    page = browser.new_page()
    if not keep_edits:
        page.call("Storage.clearDataForOrigin", origin="file://", storageTypes="local_storage")
    page.open(report.as_uri() + fragment)
    return page


def cluster_ids(page: Page) -> List[str]:
    return page.evaluate(f"{SECTIONS}.map(s => s.dataset.cluster)")


def section_paths(page: Page, key: str) -> List[str]:
    return page.evaluate(f"[...document.querySelectorAll('section.cluster[data-cluster=\"{key}\"] img[data-path]')]"
                         ".map(i => i.dataset.path)")


def assert_clean(page: Page, report: Path) -> None:
    assert page.errors() == []
    outside = [u for u in page.requests() if not (u.startswith(("data:", "blob:")) or u.startswith(report.as_uri()))]
    assert outside == []


def test_loads_without_errors_or_requests(browser: Browser, report: Path) -> None:
    page = open_page(browser, report)
    data = parse(report.read_text(encoding="utf-8")).data
    ids = cluster_ids(page)
    assert ids == [str(c) for c in range(data["k_fit"])] + ["good"]
    assert page.evaluate("document.querySelectorAll('#map').length") == 1
    assert page.evaluate("document.getElementById('map').width") > 0
    assert page.evaluate("!!window.pwned") is False  # the hostile file name stayed text
    assert page.evaluate("document.querySelectorAll('script').length") == 2
    assert HOSTILE in page.evaluate("[...document.querySelectorAll('img[data-path]')].map(i => i.dataset.path)")
    # the policy refuses connections: a fetch fails, and nothing reaches the network
    blocked = page.evaluate("fetch('http://127.0.0.1:9/x').then(() => 'sent', () => 'refused')")
    assert blocked == "refused"
    outside = [u for u in page.requests() if u.startswith("http")]
    assert outside == []
    assert any("Content Security Policy" in e for e in page.errors())  # the attempt was blocked by the policy
    good = section_paths(page, "good")
    assert sorted(good) == sorted(p for p, g in zip(data["paths"], data["is_good"]) if g)[: len(good)]


@pytest.mark.parametrize("k", [2, 4, 5, 9])
def test_fragment_opens_at_k(browser: Browser, report: Path, k: int) -> None:
    page = open_page(browser, report, f"#k={k}")
    ids = cluster_ids(page)
    assert [i for i in ids if i.isdigit()] == [str(c) for c in range(k)]
    assert page.evaluate("document.getElementById('k-slider').value") == str(k)
    # every clustered image is in the section of its cut at K
    data = parse(report.read_text(encoding="utf-8")).data
    cut = data["cuts"][k - data["k_min"]]
    for c in range(k):
        shown = set(section_paths(page, str(c)))
        expect = {p for p, v, g in zip(data["paths"], cut, data["is_good"]) if v == c and not g}
        assert shown and shown <= expect
    assert_clean(page, report)


def test_slider_regroups_and_updates_the_fragment(browser: Browser, report: Path) -> None:
    page = open_page(browser, report)
    page.evaluate("(() => { const s = document.getElementById('k-slider'); s.value = '7';"
                  " s.dispatchEvent(new Event('input')); })()")
    assert len([i for i in cluster_ids(page) if i.isdigit()]) == 7
    assert page.evaluate("location.hash") == "#k=7"
    page.evaluate("location.hash = '#k=3'")
    page.wait_for(f"{SECTIONS}.filter(s => /^\\d+$/.test(s.dataset.cluster)).length === 3")
    assert page.evaluate("document.getElementById('k-slider').value") == "3"
    assert_clean(page, report)


def select(page: Page, key: str, cls: str, value: str) -> None:
    page.evaluate(f"(() => {{ const s = document.querySelector('section.cluster[data-cluster=\"{key}\"] .{cls}');"
                  f" s.value = '{value}'; s.dispatchEvent(new Event('change')); }})()")


def test_sort_and_filter_change_the_gallery(browser: Browser, report: Path) -> None:
    page = open_page(browser, report, "#k=2")
    data = parse(report.read_text(encoding="utf-8")).data
    index = {p: i for i, p in enumerate(data["paths"])}
    by_distance = section_paths(page, "0")
    dist = [data["dist"][0][index[p]] for p in by_distance]
    assert dist == sorted(dist)
    select(page, "0", "sort", "name")
    by_name = section_paths(page, "0")
    assert by_name == sorted(by_name) and by_name != by_distance
    select(page, "0", "sort", "anomaly")
    scores = [data["anomaly_score"][index[p]] for p in section_paths(page, "0")]
    assert scores == sorted(scores, reverse=True)
    page.evaluate("(() => { const b = document.querySelector('section.cluster[data-cluster=\"0\"] .low-only');"
                  " b.checked = true; b.dispatchEvent(new Event('change')); })()")
    low = section_paths(page, "0")
    assert low and all(data["confidence"][index[p]] < data["low_confidence"] for p in low)
    assert len(low) < len(by_name)
    assert_clean(page, report)


def test_pagination_shows_every_image(browser: Browser, report: Path) -> None:
    page = open_page(browser, report, "#k=2")
    for _ in range(10):
        if not page.evaluate("(() => { const b = document.querySelector('button.more');"
                             " if (b) b.click(); return !!b; })()"):
            break
    shown = page.evaluate("[...document.querySelectorAll('section.cluster img[data-path]')].map(i => i.dataset.path)")
    data = parse(report.read_text(encoding="utf-8")).data
    assert sorted(shown) == sorted(data["paths"])


def test_zoom_heat_toggle_keyboard_and_move(browser: Browser, report: Path) -> None:
    page = open_page(browser, report, "#k=5")
    first = section_paths(page, "1")[0]
    page.evaluate("document.querySelector('section.cluster[data-cluster=\"1\"] figure.thumb').focus()")
    page.call("Input.dispatchKeyEvent", type="keyDown", key="Enter", code="Enter", windowsVirtualKeyCode=13)
    page.call("Input.dispatchKeyEvent", type="keyUp", key="Enter", code="Enter", windowsVirtualKeyCode=13)
    page.wait_for("document.getElementById('zoom').open")
    assert page.evaluate("document.getElementById('zoom-title').textContent") == first
    pixels = "(() => { const c = document.getElementById('zoom-canvas'); " \
             "return Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data" \
             ".filter((v, i) => i % 97 === 0)).join(','); })()"
    page.wait_for("document.getElementById('zoom-canvas').width > 200")
    time.sleep(0.2)
    with_heat = page.evaluate(pixels)
    page.evaluate("document.getElementById('heat-toggle').click()")
    time.sleep(0.3)
    assert page.evaluate(pixels) != with_heat
    assert page.evaluate("document.querySelectorAll('#zoom-info .neighbours img').length") == 6
    page.call("Input.dispatchKeyEvent", type="keyDown", key="ArrowRight", code="ArrowRight", windowsVirtualKeyCode=39)
    second = section_paths(page, "1")[1]
    assert page.evaluate("document.getElementById('zoom-title').textContent") == second
    # move the shown image to cluster 3
    page.evaluate("(() => { const s = document.getElementById('move-to'); s.value = '3';"
                  " s.dispatchEvent(new Event('change')); })()")
    assert second in section_paths(page, "3") and second not in section_paths(page, "1")
    assert_clean(page, report)


def test_fitted_names_are_shown_at_the_fitted_k(browser: Browser, report: Path) -> None:
    page = open_page(browser, report)
    assert page.evaluate("document.querySelector('section.cluster[data-cluster=\"0\"] input.name').value") == "scratch"
    csv_text = page.evaluate("window.anomclustReport.buildCsv()")
    assert ",scratch,cluster," in csv_text


def test_cluster_notes_are_shown_as_text_at_the_fitted_k_only(browser: Browser, report: Path) -> None:
    meta = "document.querySelector('section.cluster[data-cluster=\"0\"] .meta').textContent"
    page = open_page(browser, report)  # the fitted K, 5
    assert page.evaluate(meta).endswith(" · " + NOTE)
    assert "fitted:" not in page.evaluate("document.querySelector('section.cluster[data-cluster=\"1\"] .meta').textContent")
    assert not page.evaluate("window.pwned === 1")
    other = open_page(browser, report, "#k=6")  # cluster 0 at another K is another group of images
    assert NOTE not in other.evaluate(meta)
    assert_clean(page, report)


def test_export_csv_and_json_are_downloaded_and_read_back(browser: Browser, report: Path, tmp_path: Path) -> None:
    browser.allow_downloads(tmp_path)
    page = open_page(browser, report, "#k=4")
    data = parse(report.read_text(encoding="utf-8")).data
    page.evaluate("(() => { const i = document.querySelector('section.cluster[data-cluster=\"2\"] input.name');"
                  " i.value = 'crack, \"deep\"'; i.dispatchEvent(new Event('input')); })()")
    moved = section_paths(page, "0")[0]
    page.evaluate(f"document.querySelector('section.cluster[data-cluster=\"0\"] figure.thumb').click()")
    page.evaluate("(() => { const s = document.getElementById('move-to'); s.value = '2';"
                  " s.dispatchEvent(new Event('change')); })()")
    page.evaluate("document.getElementById('zoom').close()")
    page.evaluate("document.getElementById('export-csv').click()")
    page.evaluate("document.getElementById('export-json').click()")
    deadline = time.monotonic() + 20
    while not ((tmp_path / "review.csv").is_file() and (tmp_path / "review.json").is_file()):
        assert time.monotonic() < deadline, "the downloads did not arrive"
        time.sleep(0.1)
    time.sleep(0.2)
    text = (tmp_path / "review.csv").read_text(encoding="utf-8")
    cut = data["cuts"][4 - data["k_min"]]
    expected = io.StringIO()
    writer = csv.writer(expected, lineterminator="\n")
    writer.writerow(["path", "cluster", "name", "group", "moved"])
    for i, p in enumerate(data["paths"]):
        if data["is_good"][i]:
            writer.writerow([csv_cell(p), "" if cut[i] < 0 else cut[i], "", "good", 0])
        else:
            c = 2 if p == moved else cut[i]
            writer.writerow([csv_cell(p), c, 'crack, "deep"' if c == 2 else "", "cluster", int(p == moved)])
    assert text == expected.getvalue()
    for name in ("review.csv", "review.json"):
        review = read_review(tmp_path / name)
        assert review.names == {2: 'crack, "deep"'}  # names belong to one K: the fitted K's are not carried over
        assert review.clusters()[moved] == 2 and review.clusters()[HOSTILE] == (None if cut[7] < 0 else cut[7])
        assert [im.path for im in review.images] == data["paths"]
    assert read_review(tmp_path / "review.json").k == 4
    assert_clean(page, report)


@pytest.mark.parametrize("name", ["=HYPERLINK(\"http://x\",\"y\")", "'quoted", "-0.5", "+cmd", "@SUM(A1)"])
def test_export_csv_marks_formulas_like_python_and_names_round_trip(browser: Browser, report: Path, name: str) -> None:
    """The page's CSV marks text a spreadsheet would run exactly as review_csv does; reading strips the mark."""
    page = open_page(browser, report, "#k=3")
    page.evaluate("(n => { const i = document.querySelector('section.cluster[data-cluster=\"1\"] input.name');"
                  f" i.value = n; i.dispatchEvent(new Event('input')); }})({json.dumps(name)})")
    text = page.evaluate("window.anomclustReport.buildCsv()")
    review = parse_review(text)
    assert review.names[1] == name
    assert review_csv(review) == text
    cells = {row[2] for row in csv.reader(io.StringIO(text)) if row[1] == "1" and row[3] == "cluster"}
    assert cells == {csv_cell(name)} and csv_cell(name).startswith("'") == (name != "-0.5")
    assert_clean(page, report)


def test_map_hover_and_click(browser: Browser, report: Path) -> None:
    page = open_page(browser, report)
    box = page.evaluate("(() => { const r = document.getElementById('map').getBoundingClientRect();"
                        " return [r.left, r.top, r.width]; })()")
    data = parse(report.read_text(encoding="utf-8")).data
    x, y = data["map"][0]
    px = box[0] + (10 + x * (box[2] - 20))
    py = box[1] + (10 + (1 - y) * (box[2] - 20))
    page.call("Input.dispatchMouseEvent", type="mouseMoved", x=px, y=py)
    page.wait_for("document.getElementById('map-tip').style.display === 'block'")
    page.call("Input.dispatchMouseEvent", type="mousePressed", x=px, y=py, button="left", clickCount=1)
    page.call("Input.dispatchMouseEvent", type="mouseReleased", x=px, y=py, button="left", clickCount=1)
    page.wait_for("document.getElementById('zoom').open")
    assert_clean(page, report)


def test_heat_maps_on_thumbnails_toggle(browser: Browser, report: Path) -> None:
    page = open_page(browser, report)
    assert page.evaluate("document.querySelectorAll('figure.thumb canvas.heat').length") == 0
    page.evaluate("document.getElementById('gallery-heat').click()")
    shown = page.evaluate("document.querySelectorAll('section.cluster figure.thumb').length")
    assert page.evaluate("document.querySelectorAll('figure.thumb canvas.heat').length") == shown > 0
    assert_clean(page, report)


def test_names_and_moves_survive_a_reload_until_reset(browser: Browser, report: Path) -> None:
    page = open_page(browser, report, "#k=3")
    page.evaluate("(() => { const i = document.querySelector('section.cluster[data-cluster=\"1\"] input.name');"
                  " i.value = 'dent'; i.dispatchEvent(new Event('input')); })()")
    moved = section_paths(page, "0")[0]
    page.evaluate("document.querySelector('section.cluster[data-cluster=\"0\"] figure.thumb').click()")
    page.evaluate("(() => { const s = document.getElementById('move-to'); s.value = '2';"
                  " s.dispatchEvent(new Event('change')); })()")
    again = open_page(browser, report, "#k=3", keep_edits=True)
    assert again.evaluate("document.querySelector('section.cluster[data-cluster=\"1\"] input.name').value") == "dent"
    assert moved in section_paths(again, "2") and moved not in section_paths(again, "0")
    assert ",dent,cluster," in again.evaluate("window.anomclustReport.buildCsv()")
    again.evaluate("localStorage.setItem('probe', '1')")
    fresh = open_page(browser, report, "#k=3")  # the tests' clean start really forgets
    assert fresh.evaluate("localStorage.getItem('probe')") is None
    again.evaluate("(() => { const i = document.querySelector('section.cluster[data-cluster=\"1\"] input.name');"
                   " i.value = 'dent 2'; i.dispatchEvent(new Event('input')); })()")  # saved again, move included
    assert open_page(browser, report, "#k=3", keep_edits=True).evaluate(
        "document.querySelector('section.cluster[data-cluster=\"1\"] input.name').value") == "dent 2"
    again.evaluate("document.getElementById('forget-edits').click()")
    assert moved in section_paths(again, "0")
    third = open_page(browser, report, "#k=3", keep_edits=True)
    assert third.evaluate("document.querySelector('section.cluster[data-cluster=\"1\"] input.name').value") == ""
    assert moved in section_paths(third, "0")
    assert_clean(third, report)


@pytest.mark.parametrize("stored", ['not json', '[1, 2]', '{"names": {"3": {"0": 5, "99": "x"}, "x": 1},'
                                    ' "moves": {"3": {"0": "2", "100000": 1, "1": 99}, "-1": {}}}'])
def test_hostile_saved_edits_are_ignored(browser: Browser, report: Path, stored: str) -> None:
    data = parse(report.read_text(encoding="utf-8")).data
    page = open_page(browser, report, "#k=3")
    page.evaluate(f"localStorage.setItem('anomclust_lite.review.{data['run_id']}', {stored!r})")
    again = open_page(browser, report, "#k=3", keep_edits=True)
    cut = data["cuts"][3 - data["k_min"]]
    expected = sorted(p for p, c, g in zip(data["paths"], cut, data["is_good"]) if c == 0 and not g)
    assert sorted(section_paths(again, "0")) == expected
    assert again.evaluate("document.querySelector('section.cluster[data-cluster=\"0\"] input.name').value") == ""
    assert_clean(again, report)


def test_likely_good_images_stay_in_their_clusters_when_the_good_group_is_off(browser: Browser,
                                                                                tmp_path: Path) -> None:
    """--good-group off (the default): is_good images are clustered, so the page shows them where clusters.csv does."""
    import dataclasses

    import bench_report as bench

    run = bench.synthetic_run(40, k=3, seed=5, k_max=5, good_fraction=0.0)
    flagged = {0, 1, 2, 3, 4}
    images = [dataclasses.replace(it, is_good=i in flagged) for i, it in enumerate(run.images)]
    path = tmp_path / "report.html"
    path.write_text(render_report(dataclasses.replace(run, images=images)), encoding="utf-8")
    page = open_page(browser, path, "#k=3")
    assert "good" not in cluster_ids(page)
    for i in flagged:
        assert images[i].path in section_paths(page, str(images[i].cluster))
    assert "good group" not in page.evaluate("document.getElementById('summary').textContent")
    assert_clean(page, path)
