"""The stages run's page in a real browser: headless Chromium (Debian's `chromium`, which
.ci/run installs when missing) opens it from disk; the DOM it built holds the stage table
and the gallery, the console shows no error (an image that fails to load is one: the page
says so on the console, and a control run with a strip removed proves it), sorting by the
score gap orders the cards, and a screenshot is saved to the test's folder."""

import os
import re
import shutil
import subprocess

import pytest
from PIL import Image

from tests.report.conftest import Page, read_page
from w2s_vqa.report import build_report

CHROMIUM = next((shutil.which(n) for n in ("chromium", "chromium-browser", "google-chrome") if shutil.which(n)), None)
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="no Chromium on this machine (.ci/run installs Debian's "
                                                          "chromium; apt-get install chromium)")
# Console lines of Chromium's log (--enable-logging=stderr): `...:INFO:CONSOLE(12)] "message", source: ...`.
CONSOLE = re.compile(r":CONSOLE(?:\(\d+\)|:\d+)?\] (.*)")


def chromium(url: str, profile, *flags: str) -> tuple[str, list[str]]:
    """(stdout, console messages) of one headless Chromium run on `url`."""
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
               f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0", "--virtual-time-budget=5000",
               *flags, url]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout, [m.group(1) for m in map(CONSOLE.search, done.stderr.splitlines()) if m]


@pytest.fixture(scope="module")
def page(stages_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("browser") / "report"
    return build_report(str(stages_run), str(out))


def test_the_page_opens_from_disk_with_its_table_gallery_and_no_console_error(page, tmp_path):
    index = page["index"]
    dom, console = chromium("file://" + index, tmp_path / "profile", "--dump-dom")
    assert not console, console
    built, written = Page(dom), read_page(index)
    stage_rows = [e for e in built.find("tr") if "data-stage" in e["attrs"]]
    assert [e["attrs"]["data-stage"] for e in stage_rows] == ["1", "2"]
    cards = [e for e in built.find("li") if "data-first-id" in e["attrs"]]
    assert len(cards) == page["pairs_shown"] == len([e for e in written.find("li") if "data-first-id" in e["attrs"]])
    assert [i for i in built.find("img") if i["attrs"]["src"].startswith("frames/")]

    shot = tmp_path / "page.png"
    chromium("file://" + index, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1200,2000")
    with Image.open(shot) as image:
        image.load()
        assert image.size == (1200, 2000)
        # Not a blank page: the top holds text and pictures (many distinct colours).
        assert len(image.convert("RGB").crop((0, 0, 1200, 1000)).getcolors(1 << 20) or []) > 50


def test_a_missing_image_is_a_console_error(page, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(os.path.dirname(page["index"]), copy)
    strip = sorted(os.listdir(copy / "frames"))[0]
    os.remove(copy / "frames" / strip)
    _, console = chromium("file://" + str(copy / "index.html"), tmp_path / "profile", "--dump-dom")
    assert any("image not found: frames/" + strip in line for line in console), console


def test_sorting_by_the_score_gap_orders_every_group(page, tmp_path):
    dom, console = chromium("file://" + page["index"] + "#sort=student-gap", tmp_path / "profile", "--dump-dom")
    assert not console, console
    built = Page(dom)
    groups = [e for e in built.find("ol") if e["attrs"].get("class") == "cards"]
    assert groups
    lists = {}
    current = None
    for element in built.elements:
        if element["tag"] == "ol" and element["attrs"].get("class") == "cards":
            current = element["attrs"]["id"]
            lists[current] = []
        elif element["tag"] == "li" and "data-first-id" in element["attrs"] and current:
            gap = element["attrs"]["data-student-gap"]
            lists[current].append(abs(float(gap)) if gap else float("-inf"))
    for gaps in lists.values():
        assert gaps == sorted(gaps, reverse=True)
    written = read_page(page["index"])
    order = [e["attrs"]["data-first-id"] + e["attrs"]["data-second-id"] for e in written.find("li")
             if "data-first-id" in e["attrs"]]
    sorted_order = [e["attrs"]["data-first-id"] + e["attrs"]["data-second-id"] for e in built.find("li")
                    if "data-first-id" in e["attrs"]]
    moved = order != sorted_order
    assert sorted(order) == sorted(sorted_order) and moved  # the same cards, in another order
