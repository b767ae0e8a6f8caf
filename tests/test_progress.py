"""The CLI's progress rendering: a bar with rate and ETA on a terminal, a line every few percent otherwise."""

from __future__ import annotations

import io

from anomclust_lite.cli.progress import LOG_PERCENT, LOG_SECONDS, Bar, StageProgress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_terminal_bar_shows_rate_and_eta_and_ends_with_one_line() -> None:
    out, clock = io.StringIO(), Clock()
    bar = Bar("scoring", "image pairs", out, tty=True, clock=clock)
    bar.update(0, 400)
    clock.now += 10
    bar.update(100, 400)
    assert "\r" in out.getvalue()
    last = out.getvalue().split("\r")[-1]
    assert "[#####...............]" in last and " 25%" in last and "100/400 image pairs" in last
    assert "10.0/s" in last and "ETA 30.0 s" in last
    clock.now += 30
    bar.update(400, 400)
    assert out.getvalue().endswith("scoring: 400 image pairs in 40.0 s, 10.0/s\x1b[K\n")


def test_log_stream_gets_a_line_every_few_percent_and_when_slow() -> None:
    out, clock = io.StringIO(), Clock()
    bar = Bar("extracting features", "images", out, tty=False, clock=clock)
    for done in range(0, 1001):
        clock.now += 0.1
        bar.update(done, 1000)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue()
    assert len(lines) == 100 // LOG_PERCENT + 1  # 0%, 5%, ... 95%, and the closing line
    assert lines[-1].startswith("extracting features: 1,000 images in 1:40")
    out3, fast = io.StringIO(), Bar("scoring", "image pairs", io.StringIO(), tty=False, clock=clock)
    fast.stream = out3
    for done in range(0, 101):
        clock.now += 0.01  # a one-second stage: one line, then the closing one
        fast.update(done, 100)
    assert len(out3.getvalue().splitlines()) == 2
    out2 = io.StringIO()
    slow = Bar("scoring", "image pairs", out2, tty=False, clock=clock)
    slow.update(0, 10_000)
    for done in range(1, 4):
        clock.now += LOG_SECONDS + 1
        slow.update(done, 10_000)  # far below 5 %, but a line every LOG_SECONDS
    assert len(out2.getvalue().splitlines()) == 4 and "ETA" in out2.getvalue().splitlines()[-1]


def test_stage_progress_lines_bars_and_cache_hits() -> None:
    out, clock = io.StringIO(), Clock()
    show = StageProgress(out, tty=False, clock=clock)
    show("scoring", 0, 10)
    clock.now += 2
    show("scoring", 10, 10)
    show("scores (from the cache)", 0, 0)
    show("clustering", 0, 0)
    lines = out.getvalue().splitlines()
    assert lines[-3].startswith("scoring: 10 image pairs in 2.0 s")
    assert lines[-2:] == ["scores (from the cache)", "clustering..."]
    quiet = io.StringIO()
    StageProgress(quiet, tty=True, quiet=True)("scoring", 1, 2)
    assert quiet.getvalue() == ""


def test_hostile_stage_text_stays_on_one_line() -> None:
    out = io.StringIO()
    StageProgress(out, tty=False)("x\x1b[2J\ny", 0, 0)
    assert out.getvalue().count("\n") == 1 and "\x1b" not in out.getvalue()
