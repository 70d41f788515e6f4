"""report.html is the whole report: every section of report.md, rendered, with the charts; every string a user
controls (a class name, an error line) escaped; and a real browser (Debian's chromium) shows the sections and draws
the charts without running any injected script."""

from __future__ import annotations

import os
import re
from html.parser import HTMLParser

import pytest

from orchestrator.store import Store
from reports.build import build_report

EVIL = '</script><img src=x onerror="window.__pwned=1">'


class Text(HTMLParser):
    """The visible text of a page (no script or style), and its headings."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.headings: list[str] = []
        self._skip = 0
        self._heading: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._skip += 1
        if re.fullmatch(r"h\d", tag):
            self._heading = []

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1
        if re.fullmatch(r"h\d", tag) and self._heading is not None:
            self.headings.append("".join(self._heading).strip())
            self._heading = None

    def handle_data(self, data):
        if not self._skip:
            self.parts.append(data)
            if self._heading is not None:
                self._heading.append(data)


def rich_run(tmp_path):
    """A store with every kind of section: two objectives (Pareto), latency rows (one failed), a held-out split, a
    self-check that failed, a failed trial, a staged trial, a searched continuous key; a class name and an error
    line holding markup."""
    store = Store(tmp_path / "results.db")
    classes = ["background", EVIL]
    store.set_meta(sweep="rich", metric="val/miou", mode="max", trials=4, max_epochs=3, rungs=[1], classes=classes,
                   objectives=[{"metric": "val/miou", "mode": "max"}, {"metric": "latency/p50_ms", "mode": "min"}],
                   domains={"optimizer.lr": {"kind": "loguniform", "values": [1e-4, 1e-2]},
                            "model.arch": {"kind": "choice", "values": ["unet", "enet"]}},
                   data={"dataset": "folder", "task": "multiclass", "train": {"images": 8}, "val": {"images": 4}})
    for i, arch in enumerate(["unet", "enet", "unet"]):
        store.add_trial(f"t{i}", {"model.arch": arch, "optimizer.lr": 1e-3 * (i + 1), "loss.name": "ce"}, "running")
        for epoch in (1, 2, 3):
            prefix = "stage1/" if arch == "enet" and epoch == 1 else ""
            store.record_epoch(f"t{i}", {"epoch": epoch, f"{prefix}val/miou": 0.2 * epoch + 0.01 * i,
                                         f"{prefix}val/loss": 1.0 / epoch, f"{prefix}val/iou/{EVIL}": 0.1,
                                         "latency/p50_ms": 3.0 + i})
        store.finish_trial(f"t{i}", "completed")
    store.add_trial("t3", {"model.arch": "unet", "optimizer.lr": 0.01, "loss.name": "ce"}, "running")
    store.finish_trial("t3", "failed", f"RuntimeError: {EVIL} [sign in again](https://evil.example/x) "
                                       "<https://evil.example/y> ![i](https://evil.example/z.png)")
    store.record_latency("t0", "ort-cpu", "local", {"p50_ms": 3.2, "mean_ms": 3.3, "p90_ms": 3.5, "p99_ms": 4.0,
                                                    "throughput_fps": 300.0, "device": "cpu"})
    store.record_latency("t1", "trtexec", "ssh://jetson", None, "ssh://jetson: cannot connect")
    store.record_evaluation("t2", "test", "none", 6, {"miou": 0.55})
    store.record_check("t2", "val/miou", 0.62, 0.03, 0.005, False)
    store.record_check("t1", "val/miou", 0.61, 0.61, 0.005, True)
    return build_report(tmp_path)


def test_every_section_of_report_md_is_in_report_html_and_markup_is_escaped(tmp_path):
    md_path, html_path = rich_run(tmp_path)
    md, page = md_path.read_text(), html_path.read_text()
    text = Text()
    text.feed(page)
    visible = re.sub(r"\s+", " ", "".join(text.parts))
    headings = [line.lstrip("#").strip() for line in md.splitlines() if line.startswith("#")]
    assert {"rich: model-wise comparison", "Study analysis", "Failed latency measurements", "Failed trials",
            "Best trial"} <= set(headings)
    assert headings == text.headings  # every heading of report.md, in its order
    for line in md.splitlines():  # every paragraph, list item and table row, as text
        if not line.strip() or line.startswith(("#", "|---", "```")):
            continue
        plain = re.sub(r"\s+", " ", re.sub(r"\*\*|`", "", line.removeprefix("- ")))
        cells = re.split(r"(?<!\\)\|", plain) if line.startswith("|") else [plain]
        for cell in filter(None, (re.sub(r"\\([\\`\[\]<>|])", r"\1", c).strip() for c in cells)):
            assert cell in visible, cell  # markdown's backslash escapes shown as the characters they escape
    for must in ("pareto", "NOT REPRODUCED (0.0300)", "0.5500 (unverified)", "ort-cpu@local p50 ms",
                 "Self-check", "Held-out figures (test)", "Importance for" if "Importance" in md else "rich"):
        assert must in visible
    assert EVIL not in page and "<img src=x" not in page  # escaped in the text and in plotly's JSON
    assert "evil.example" in visible and "href=\"https://evil" not in page and "<img src=\"https://evil" not in page
    assert page.count("<div class='chart'>") >= 6


def test_a_browser_shows_every_section_and_the_charts_and_runs_no_injected_script(tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    if not os.path.exists("/usr/bin/chromium"):
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; .ci/run does)")
    md_path, html_path = rich_run(tmp_path)
    headings = [line.lstrip("#").strip() for line in md_path.read_text().splitlines() if line.startswith("#")]
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        page = browser.new_page()
        dialogs: list[str] = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(html_path.as_uri())
        page.wait_for_selector(".chart .main-svg", timeout=30_000)
        assert [h.strip() for h in page.locator("h1, h2").all_inner_texts()] == headings
        assert page.locator(".chart .main-svg").count() >= 6  # plotly drew every chart, offline
        assert page.locator("table").first.locator("tbody tr").count() == 4
        assert page.evaluate("window.__pwned") is None and not dialogs
        browser.close()
