"""The review file exported by the report page: format, reader, writer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anomclust_lite.report import review as rv
from anomclust_lite.report.review import Review, ReviewImage, parse_review, read_review, review_csv, review_json, write_review

CSV = "path,cluster,name,group,moved\n" \
      'a.png,0,crack,cluster,0\n"b,1.png",0,crack,cluster,1\nc.png,2,,new,0\nd.png,,,good,0\n'


def test_csv_is_read() -> None:
    r = parse_review(CSV)
    assert r.k == 3 and r.names == {0: "crack"}
    assert r.images[1] == ReviewImage("b,1.png", 0, "cluster", True)
    assert r.clusters() == {"a.png": 0, "b,1.png": 0, "c.png": 2, "d.png": None}


def test_json_is_read_and_keeps_k() -> None:
    data = {"format": rv.REVIEW_FORMAT, "version": 1, "k": 5,
            "clusters": [{"cluster": 0, "name": " scratch "}, {"cluster": 4, "name": ""}],
            "images": [{"path": "a.png", "cluster": 0, "group": "cluster", "moved": False},
                       {"path": "g.png", "cluster": None, "group": "good", "moved": False}]}
    r = parse_review(json.dumps(data))
    assert r.k == 5 and r.names == {0: "scratch"} and r.clusters() == {"a.png": 0, "g.png": None}


@pytest.mark.parametrize(
    "text, match",
    [
        ("path,cluster\na,0\n", "header"),
        ("", "header"),
        ("path,cluster,name,group,moved\na,0,x,cluster\n", "line 2: expected 5 fields"),
        ("path,cluster,name,group,moved\na,-1,,cluster,0\n", "line 2: cluster"),
        ("path,cluster,name,group,moved\na,x,,cluster,0\n", "cluster must be an integer"),
        ("path,cluster,name,group,moved\na,,,cluster,0\n", "only images of the good group"),
        ("path,cluster,name,group,moved\na,0,,odd,0\n", "group must be one of"),
        ("path,cluster,name,group,moved\na,0,,cluster,2\n", "moved must be 0 or 1"),
        ("path,cluster,name,group,moved\na,0,,cluster,0\na,1,,cluster,0\n", "listed twice"),
        ("path,cluster,name,group,moved\na,0,x,cluster,0\nb,0,y,cluster,0\n", "named both"),
        ("path,cluster,name,group,moved\n,0,,cluster,0\n", "path must be non-empty"),
        ("path,cluster,name,group,moved\na,0,\x07bell,cluster,0\n", "control"),
        ("path,cluster,name,group,moved\n", "no images"),
        ('{"format": "other"}', "not a review file"),
        ('{"format": "anomclust_lite.review", "version": 9}', "version 9"),
        ('{"format": "anomclust_lite.review", "version": 1, "k": 0, "images": []}', "k must be"),
        ('{"format": "anomclust_lite.review", "version": 1, "k": 1, '
         '"images": [{"path": "a", "cluster": 3}]}', "outside 0..0"),
        ('{"format": "anomclust_lite.review", "version": 1, "k": 2, "images": [5]}', r"images\[0\]"),
        ('{"format": "anomclust_lite.review", "version": 1, "k": 2, '
         '"images": [{"path": "a", "cluster": true}]}', "cluster must be"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_reviews_are_refused_with_where(text: str, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        parse_review(text, "r.csv")


def test_read_review_refuses_non_utf8_and_huge_files(tmp_path: Path, monkeypatch) -> None:
    bad = tmp_path / "r.csv"
    bad.write_bytes(b"path,cluster,name,group,moved\n\xff,0,,cluster,0\n")
    with pytest.raises(ValueError, match="not UTF-8"):
        read_review(bad)
    monkeypatch.setattr(rv, "MAX_REVIEW_BYTES", 10)
    with pytest.raises(ValueError, match="larger than 10 bytes"):
        read_review(bad)


def test_bom_is_accepted(tmp_path: Path) -> None:
    p = tmp_path / "r.csv"
    p.write_text("\ufeff" + CSV, encoding="utf-8")
    assert read_review(p).names == {0: "crack"}


paths = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20).filter(lambda s: s.strip())
names = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=15).map(str.strip)


@st.composite
def reviews(draw) -> Review:
    k = draw(st.integers(1, 6))
    ps = draw(st.lists(paths, min_size=1, max_size=12, unique=True))
    images = []
    for p in ps:
        group = draw(st.sampled_from(rv.REVIEW_GROUPS))
        cluster = None if group == "good" and draw(st.booleans()) else draw(st.integers(0, k - 1))
        images.append(ReviewImage(p, cluster, group, draw(st.booleans())))
    named = draw(st.dictionaries(st.integers(0, k - 1), names, max_size=k))
    return Review(k=k, names={c: n for c, n in sorted(named.items()) if n}, images=tuple(images))


@settings(max_examples=60, deadline=None)
@given(reviews())
def test_json_round_trip(review: Review) -> None:
    assert parse_review(review_json(review)) == review


@settings(max_examples=60, deadline=None)
@given(reviews())
def test_csv_round_trip(review: Review) -> None:
    back = parse_review(review_csv(review))
    assert back.images == review.images
    # CSV carries only the names of clusters that hold images, and K as the largest cluster + 1
    used = {im.cluster for im in review.images if im.group == "cluster"}
    assert back.names == {c: n for c, n in review.names.items() if c in used}


def test_write_review_chooses_by_suffix(tmp_path: Path) -> None:
    r = parse_review(CSV)
    write_review(tmp_path / "r.json", r)
    write_review(tmp_path / "r.csv", r)
    assert json.loads((tmp_path / "r.json").read_text())["format"] == rv.REVIEW_FORMAT
    assert (tmp_path / "r.csv").read_text().splitlines()[0] == ",".join(rv.REVIEW_COLUMNS)
    assert read_review(tmp_path / "r.json").images == read_review(tmp_path / "r.csv").images == r.images


def test_csv_quotes_carriage_returns_like_the_page() -> None:
    r = Review(k=1, names={0: "x"}, images=(ReviewImage("a\rb,c", 0), ReviewImage('q"', 0)))
    text = review_csv(r)
    assert text == 'path,cluster,name,group,moved\n"a\rb,c",0,x,cluster,0\n"q""",0,x,cluster,0\n'
    assert parse_review(text) == r


def test_shared_images_keeps_review_order_and_refuses_no_overlap() -> None:
    review = Review(2, {0: "scratch"}, (ReviewImage("b.png", 0), ReviewImage("a.png", 1), ReviewImage("c.png", 0)))
    assert [im.path for im in review.shared_images(["c.png", "b.png", "zz.png"])] == ["b.png", "c.png"]
    with pytest.raises(ValueError, match=r"^the review r\.csv names none of this run's images"):
        review.shared_images(iter(["x.png"]), "the review r.csv")
    with pytest.raises(ValueError, match="names none"):
        rv.carry_names(review, {"x.png": 0}, 2)
