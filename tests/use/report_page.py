"""Reading a run's ``report.html`` as its reader would: parsed, and rendered in a headless
browser where one is installed (Debian's ``chromium-headless-shell``, or ``chromium``).

The browser check loads a copy of the page with two probes added (one at the top of the
head, one at the end of the body): the first records every error event from then on
(script errors and resources that failed to load, in the capture phase), the second, on
``load``, writes what the browser made of the page into the DOM, which ``--dump-dom``
returns: the drawn curve's size, the embedded plot's decoded size, each table's rendered
rows, and every resource the page fetched.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome")
BROWSER_TIMEOUT_S = 60


class Page(HTMLParser):
    """Tables by id (rows of cell texts), SVG points, and every attribute naming a resource."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self.points: list[tuple[float, float]] = []
        self.resources: list[str] = []
        self.scripts = 0
        self.open: list[str] = []  # elements opened and not yet closed
        self._table: str | None = None
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag not in VOID:
            self.open.append(tag)
        self.resources += [v or "" for k, v in attrs if k in ("src", "href", "xlink:href")]
        self.resources += [v or "" for k, v in attrs if k == "style" and "url(" in (v or "")]
        self.scripts += tag in ("script", "link", "iframe", "object", "embed", "base")
        if tag == "table":
            self._table = values["id"]
            self.tables[self._table or ""] = []
        elif tag == "tr" and self._table is not None:
            self.tables[self._table].append([])
        elif tag in ("td", "th"):
            self._cell = []
        elif tag == "circle":
            self.points.append((float(values["data-x"] or 0), float(values["data-y"] or 0)))

    def handle_endtag(self, tag: str) -> None:
        if tag not in VOID:
            assert self.open and self.open[-1] == tag, f"</{tag}> closes <{self.open[-1:]}>"
            self.open.pop()
        if tag in ("td", "th") and self._cell is not None and self._table is not None:
            self.tables[self._table][-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


VOID = {"meta", "img", "br", "hr", "input", "link", "source", "wbr", "area", "base", "col"}


def parse(path: Path) -> Page:
    """``path`` parsed; every element it opens is closed, in order."""
    page = Page()
    text = path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    page.feed(text)
    page.close()
    assert page.open == [], f"unclosed: {page.open}"
    return page


def assert_self_contained(page: Page) -> None:
    """No script, frame or linked file; every resource an inline PNG."""
    assert page.scripts == 0
    assert all(r.startswith("data:image/png;base64,") for r in page.resources)


def browser() -> str | None:
    """A headless Chromium on PATH, or None."""
    return next((found for name in BROWSERS if (found := shutil.which(name))), None)


_ERRORS = (
    "<script>window.__errors=[];addEventListener('error',e=>__errors.push("
    "String(e.message||(e.target&&e.target.outerHTML)).slice(0,200)),true);</script>"
)
_PROBE = (
    "<script>addEventListener('load',()=>{const box=e=>e.getBoundingClientRect();"
    "const svg=document.querySelector('svg'),img=document.querySelector('img');"
    "const tables={};for(const t of document.querySelectorAll('table[id]'))"
    "tables[t.id]=[...t.rows].filter(r=>box(r).height>0).length;"
    "document.body.setAttribute('data-probe',JSON.stringify({errors:__errors,"
    "svg:svg?[box(svg).width,box(svg).height,svg.querySelectorAll('circle').length]:null,"
    "image:img?[img.complete,img.naturalWidth,img.naturalHeight]:null,tables:tables,"
    "fetched:performance.getEntriesByType('resource').map(r=>r.name)}))});</script>"
)


@dataclass(frozen=True)
class Rendered:
    """What the browser made of a page: the probe's findings and its console lines."""

    errors: list[str]
    svg: list[float] | None
    image: list[Any] | None
    tables: dict[str, int]
    fetched: list[str]
    console: list[str]


class _Probe(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.found: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":
            self.found = dict(attrs).get("data-probe")


def render(report: Path, work: Path, *, executable: str) -> Rendered:
    """Load a probed copy of ``report`` (in ``work``) in the headless ``executable``, with
    its profile in ``work`` and no network."""
    text = report.read_text(encoding="utf-8")
    probed = text.replace("<head>", "<head>" + _ERRORS, 1).replace("</body>", _PROBE + "</body>")
    copy = work / report.name
    copy.write_text(probed, encoding="utf-8")
    done = subprocess.run(
        [
            executable,
            "--headless",
            "--no-sandbox",  # root in CI containers; the page is ours
            "--disable-gpu",
            "--disable-breakpad",
            "--enable-logging=stderr",
            "--v=0",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={work / 'profile'}",
            "--dump-dom",
            copy.resolve().as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=BROWSER_TIMEOUT_S,
        check=True,
    )
    probe = _Probe()
    probe.feed(done.stdout)
    assert probe.found is not None, f"the page did not finish loading: {done.stderr[-2000:]}"
    found = json.loads(probe.found)
    console = [line for line in done.stderr.splitlines() if ":CONSOLE" in line]
    return Rendered(console=console, **found)
