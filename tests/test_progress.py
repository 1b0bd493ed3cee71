"""Progress on a terminal redraws in place; in a log file it is a few plain lines with the same figures."""

import io

from w2s_vqa import progress


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_a_log_file_gets_plain_lines_not_carriage_returns():
    log = io.StringIO()
    with progress.bar(stream=log, total=5000, desc="train", unit="step") as bar:
        for _ in range(5000):
            bar.update(1)
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    # One line when the bar opens and one when it closes: far fewer than one per update.
    assert 1 <= len(lines) <= 3, lines
    assert "train" in lines[-1] and "5000/5000" in lines[-1]


def test_a_log_file_gets_a_line_per_interval():
    log = io.StringIO()
    with progress.bar(stream=log, total=3, log_interval=0.0, desc="prepare") as bar:
        for _ in range(3):
            bar.update(1)
    lines = log.getvalue().splitlines()
    assert [line.split("|")[0].strip().startswith("prepare") for line in lines] == [True] * len(lines)
    assert len(lines) >= 4 and "3/3" in lines[-1]


def test_a_terminal_gets_the_redrawing_bar(monkeypatch):
    monkeypatch.setenv("TERM", "xterm")
    screen = _Terminal()
    with progress.bar(stream=screen, total=3, desc="train", mininterval=0) as bar:
        for _ in range(3):
            bar.update(1)
    assert "\r" in screen.getvalue() and "3/3" in screen.getvalue()
