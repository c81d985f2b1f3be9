"""The rendered book, read in a real browser: headless Chromium opens every page at 1280 px and at
400 px and reports what a reader would see broken.

A page fails when, at either width,

- ``overflow``: a display-math block, a table or a code cell (input or output), or any other text
  of the article (an inline formula, an API signature, a paragraph), reaches past a box that
  contains it with no box between them that scrolls to it: it is cut off (``clipped by``), out of
  a scroll container's reach (``unreachable in``) or spills over the page's margin (``spills out
  of``). What scrolls inside its own box is fine (``--scrolling`` lists it). Each piece of text is
  measured (MathJax's output as one piece), so a formula a theme rule clips inside MathJax's own
  spans is caught;
- ``page-overflow``: the page itself scrolls sideways (something is wider than the window);
- ``alt``: an ``<img>`` has no alt text, or an alt that is a file name or a hash;
- ``js-error``: the page throws, rejects a promise unhandled or calls ``console.error``;
- ``load-error``: a script, stylesheet or image of the page fails to load.

No driver is needed: each page is copied into a temporary file with two scripts injected (one at
the start of ``<head>`` that records errors, one at the end of ``<body>`` that waits for the window's
load event and MathJax's typesetting, measures, and writes a JSON report into the DOM), and
``chromium --headless --dump-dom`` prints the DOM the report is read from. The copy carries a
``<base>`` that points at the real page, so every relative link resolves as it does there.
Chromium makes no window narrower than 500 px: the 400 px view is a 400 px frame. The checker
itself is tested on hand-made pages: one defect of each class, and a long formula typeset by the
book's MathJax under the theme's rules (cut) and under the book's CSS (scrolls).

Run it alone with ``make test-browser``; ``python tests/test_browser.py [--scrolling] [page ...]``
prints the defects of the rendered book (or of the named pages) without pytest, and with
``--scrolling`` what scrolls sideways inside its box (fine, but a formula that scrolls at 1280 px
is one to break over lines). The book is built with ``make book`` when ``_build/html`` is missing;
the test is skipped, with the reason, only when no Chromium can be found or installed.
"""
from __future__ import annotations

import base64
import html
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HTML = ROOT / "_build" / "html"
WIDTHS = (1280, 400)
HEIGHT = 900
MIN_WINDOW = 500  # Chromium's narrowest window: narrower widths are framed (see frame())
JOBS = 2  # pages checked at once (Chromium is multi-process: two are enough for two cores)
BUDGET_MS = 30000  # virtual time each page gets to load and typeset (it is skipped when idle)
MARK = "fz-browser-report"

# --- the two injected scripts ----------------------------------------------------------------

_HEAD = r"""<script>(function () {
  var errors = window.__fzErrors = [];
  function text(x) { try { return (x && x.stack) ? String(x.stack).split("\n")[0] : String(x); } catch (e) { return "?"; } }
  window.addEventListener("error", function (e) {
    var t = e.target;
    if (t && t !== window && (t.src || t.href)) errors.push({kind: "load-error", message: "failed to load " + (t.src || t.href), element: t.tagName.toLowerCase()});
    else errors.push({kind: "js-error", message: (e.message || text(e.error)) + (e.filename ? " (" + e.filename.split("/").pop() + ":" + e.lineno + ")" : "")});
  }, true);
  window.addEventListener("unhandledrejection", function (e) { errors.push({kind: "js-error", message: "unhandled rejection: " + text(e.reason)}); });
  var original = console.error;
  console.error = function () {
    errors.push({kind: "js-error", message: "console.error: " + Array.prototype.map.call(arguments, text).join(" ")});
    return original.apply(console, arguments);
  };
})();</script>"""

_TAIL = r"""<script>(function () {
  var MARK = "__MARK__";
  // what an overflowing piece of content is reported as: its innermost enclosing element of a kind
  var KINDS = [
    ["math", "div.math, .math-wrapper, .MathJax_Display, mjx-container[display='true'], .katex-display"],
    ["table", "table"],
    ["code", "div.highlight, div.cell_input, div.cell_output, div.output, pre"]
  ];
  var ANY_KIND = KINDS.map(function (k) { return k[1]; }).join(", ");
  // measured as one piece (their insides are MathJax's own layout, or replaced content)
  var MATH_ATOMS = ".MathJax, .MathJax_SVG, mjx-container, .katex";
  var ATOMS = MATH_ATOMS + ", img, svg, canvas, video, iframe";
  var SKIP = "script, style, template, .MathJax_Preview, .MJX_Assistive_MathML, mjx-assistive-mml, .sr-only, .visually-hidden, a.headerlink";
  var BLOCK = /^(block|flex|grid|flow-root|list-item|table-cell|table-caption)$/;
  var TOL = 2;  // px of overhang that are not a defect (glyph overhangs, rounding)
  function cut(text, n) { return Array.from(text).slice(0, n).join(""); }  // whole characters
  function describe(el) {
    var s = el.tagName.toLowerCase();
    if (el.id) s += "#" + el.id;
    var cls = (typeof el.className === "string" ? el.className : "").trim().split(/\s+/).filter(Boolean).slice(0, 3);
    if (cls.length) s += "." + cls.join(".");
    var heading = null, node = el;
    while (node && !heading) {  // the nearest heading before the element, to find it on the page
      var prev = node.previousElementSibling;
      while (prev && !/^H[1-6]$/.test(prev.tagName)) prev = prev.previousElementSibling;
      if (prev) heading = prev; else node = node.parentElement;
    }
    var where = heading ? cut(heading.textContent.replace(/#$/, "").trim(), 60) : "";
    var snippet = cut((el.textContent || "").replace(/\s+/g, " ").trim(), 70);
    return {element: s, section: where, text: snippet};
  }
  function scrolls(el) { var o = getComputedStyle(el).overflowX; return o === "auto" || o === "scroll"; }
  function clips(el) { var o = getComputedStyle(el).overflowX; return o === "hidden" || o === "clip"; }
  function visible(el) { var r = el.getBoundingClientRect(); return r.width > 0 && r.height > 0 && getComputedStyle(el).visibility !== "hidden"; }
  function contentBox(el) { var r = el.getBoundingClientRect(); return {left: r.left + el.clientLeft, right: r.left + el.clientLeft + el.clientWidth}; }
  function union(a, b) { return !a ? b : !b ? a : {left: Math.min(a.left, b.left), right: Math.max(a.right, b.right)}; }
  var range = document.createRange();
  function extent(leaf) {  // the horizontal extent of what a leaf draws
    if (leaf.nodeType === 3) {
      range.selectNodeContents(leaf);
      var r = range.getBoundingClientRect();
      return r.width > 0 ? {left: r.left, right: r.right} : null;
    }
    var box = leaf.getBoundingClientRect(), e = box.width > 0 ? {left: box.left, right: box.right} : null;
    if (scrolls(leaf)) return e;
    leaf.querySelectorAll(":scope > nobr > .math, :scope > mjx-math, :scope > svg, .katex-html").forEach(function (inner) {
      var r = inner.getBoundingClientRect();
      if (r.width > 0) e = union(e, {left: r.left, right: r.right});
    });
    return e;
  }
  function leaves(root, out) {
    for (var n = root.firstChild; n; n = n.nextSibling) {
      if (n.nodeType === 3) { if (/\S/.test(n.data)) out.push(n); continue; }
      if (n.nodeType !== 1 || n.matches(SKIP)) continue;
      var cs = getComputedStyle(n);
      if (cs.display === "none" || cs.visibility === "hidden" || cs.position === "fixed") continue;
      if (n.matches(ATOMS)) out.push(n); else leaves(n, out);
    }
  }
  var reach = new Map();  // how far a scroll container can scroll from where it is, left and right
  function reachOf(box) {
    if (!reach.has(box)) {
      var at = box.scrollLeft;
      box.scrollLeft = at + 1e7; var right = box.scrollLeft - at;
      box.scrollLeft = at - 1e7; var left = at - box.scrollLeft;
      box.scrollLeft = at;
      reach.set(box, {left: left, right: right});
    }
    return reach.get(box);
  }
  // Follow a leaf's extent up to the article. A scroll container that can scroll to it contains
  // it (and is followed in its place); a box that clips it, or a block it spills out of, is a defect.
  function follow(leaf, article) {
    var e = extent(leaf);
    if (!e) return null;
    if (leaf.nodeType === 1) {  // a formula clipped inside its own layout (a theme rule on MathJax's spans)
      var cut = null;
      leaf.querySelectorAll(":scope > nobr > .math, :scope > mjx-math, .katex-html").forEach(function (inner) {
        if (clips(inner) && inner.scrollWidth > inner.clientWidth + TOL)
          cut = {box: inner, px: Math.round(inner.scrollWidth - inner.clientWidth), how: "clipped by"};
      });
      if (cut) return cut;
    }
    var box = leaf.parentElement, spilled = null;
    while (box) {
      var c = contentBox(box), right = e.right - c.right, left = c.left - e.left;
      if (right > TOL || left > TOL) {
        if (scrolls(box)) {
          var can = reachOf(box);
          if (right > can.right + TOL || left > can.left + TOL)
            return {box: box, px: Math.round(Math.max(right - can.right, left - can.left)), how: "unreachable in"};
          var b = box.getBoundingClientRect(); e = {left: b.left, right: b.right}; spilled = null;
        } else if (clips(box)) {
          return {box: box, px: Math.round(Math.max(right, left)), how: "clipped by"};
        } else if (!spilled && BLOCK.test(getComputedStyle(box).display) && getComputedStyle(box).position !== "absolute") {
          spilled = {box: box, px: Math.round(Math.max(right, left)), how: "spills out of"};
        }
      }
      if (box === article) break;
      box = box.parentElement;
    }
    return spilled;  // out of a block and into the page's margin, or further, with nothing to scroll it
  }
  function inBox(el) {  // inside a box that scrolls or clips: it does not widen the page
    for (var a = el.parentElement; a && a !== document.body; a = a.parentElement) if (scrolls(a) || clips(a)) return true;
    return false;
  }
  function kindOf(el) {
    if (el.matches(MATH_ATOMS)) return "math";
    for (var i = 0; i < KINDS.length; i++) if (el.matches(KINDS[i][1])) return KINDS[i][0];
    return "other";
  }
  function measure() {
    var article = document.querySelector("article.bd-article") || document.querySelector("[role=main]") || document.body;
    var defects = [], scrolled = [], found = new Map(), all = [];
    leaves(article, all);
    all.forEach(function (leaf) {
      var hit = follow(leaf, article);
      if (!hit) return;
      var start = leaf.nodeType === 3 ? leaf.parentElement : leaf, owner = start.closest(ANY_KIND);
      if ((!owner || !article.contains(owner)) && start.matches(MATH_ATOMS)) owner = start;  // inline math
      else if (!owner || !article.contains(owner)) {  // other content: reported by its block (paragraph, signature)
        owner = start;
        while (owner !== article && !BLOCK.test(getComputedStyle(owner).display)) owner = owner.parentElement;
      }
      var key = found.get(owner);
      if (!key || key.px < hit.px) found.set(owner, hit);
    });
    found.forEach(function (hit, owner) {
      var d = describe(owner);
      d.kind = "overflow"; d.what = kindOf(owner); d.how = hit.how; d.by = describe(hit.box).element; d.px = hit.px;
      defects.push(d);
    });
    // what scrolls sideways (fine, but worth knowing: a formula that scrolls at 1280 px is long)
    article.querySelectorAll("*").forEach(function (el) {
      if (el.scrollWidth > el.clientWidth + TOL && scrolls(el) && visible(el)) {
        var k = el.querySelector("table") ? "table" : el.querySelector(MATH_ATOMS) ? "math" : kindOf(el);
        var d = describe(el); d.what = k; d.px = el.scrollWidth - el.clientWidth;
        scrolled.push(d);
      }
    });
    // a word cut in two inside a table cell (overflow-wrap: anywhere on the cell's p did that
    // at 400 px); breaks at spaces, hyphens and slashes are fine
    article.querySelectorAll("td, th").forEach(function (cell) {
      if (!visible(cell)) return;
      var walker = document.createTreeWalker(cell, NodeFilter.SHOW_TEXT), node;
      while ((node = walker.nextNode())) {
        var re = /[^\s\-\u2013\/]+/g, m;
        while ((m = re.exec(node.data))) {
          range.setStart(node, m.index); range.setEnd(node, m.index + m[0].length);
          var tops = {};
          Array.prototype.forEach.call(range.getClientRects(), function (r) {
            if (r.width > 0) tops[Math.round(r.top)] = true;
          });
          if (Object.keys(tops).length > 1) {
            var d = describe(cell); d.kind = "split-word"; d.word = m[0]; defects.push(d);
            return;
          }
        }
      }
    });
    var page = document.documentElement;
    if (page.scrollWidth > window.innerWidth + 1) {
      var widest = null, widestRight = window.innerWidth + 1;
      document.querySelectorAll("body *").forEach(function (el) {
        var r = el.getBoundingClientRect();
        if (r.right > widestRight && visible(el) && !inBox(el)) { widest = el; widestRight = r.right; }
      });
      var d = widest ? describe(widest) : {element: "?", section: "", text: ""};
      d.kind = "page-overflow"; d.px = page.scrollWidth - window.innerWidth;
      defects.push(d);
    }
    var FILE = /(^|\/)[\w.\-]+\.(png|jpe?g|gif|svg|webp|bmp|tiff?)$/i, HASH = /^[\s./_-]*[0-9a-f]{12,}/i;
    document.querySelectorAll("img").forEach(function (img) {
      var alt = img.getAttribute("alt");
      var problem = alt === null ? "no alt attribute" : !alt.trim() ? "empty alt" :
        (FILE.test(alt.trim()) || HASH.test(alt.trim())) ? "alt is a file name or hash: " + alt.trim().slice(0, 50) : null;
      if (!problem) return;
      var d = describe(img); d.kind = "alt"; d.problem = problem; d.src = (img.getAttribute("src") || "").split("/").pop().slice(0, 24);
      defects.push(d);
    });
    (window.__fzErrors || []).forEach(function (e) { defects.push(e); });
    var mathjax = window.MathJax && window.MathJax.Hub ? "2" : window.MathJax && window.MathJax.startup ? "3" : "none";
    var report = {width: window.innerWidth, title: document.title, mathjax: mathjax,
                  typeset: document.querySelectorAll(".MathJax, .MathJax_Display, mjx-container").length,
                  scrolled: scrolled, defects: defects};
    var out = document.createElement("div");
    out.id = MARK;
    var encoded = btoa(unescape(encodeURIComponent(JSON.stringify(report))));
    out.setAttribute("data-report", encoded);
    document.body.appendChild(out);
    if (window.parent !== window) window.parent.postMessage({fzReport: encoded}, "*");  // see frame()
  }
  function typeset() {  // resolves once MathJax (2 or 3), if the page has it, has typeset the page
    return new Promise(function (resolve) {
      var M = window.MathJax;
      if (M && M.startup && M.startup.promise) M.startup.promise.then(resolve, resolve);
      else if (M && M.Hub && M.Hub.Register) M.Hub.Register.StartupHook("End", function () { M.Hub.Queue(resolve); });
      else resolve();
    });
  }
  var loaded = new Promise(function (resolve) {
    if (document.readyState === "complete") resolve(); else window.addEventListener("load", resolve);
  });
  var done = false;
  function finish() { if (!done) { done = true; try { measure(); } catch (e) { window.__fzErrors.push({kind: "checker", message: String(e && e.stack || e)}); measure(); } } }
  loaded.then(typeset).then(function () { setTimeout(finish, 300); });  // let layout settle
  setTimeout(finish, __TIMEOUT__);  // a page whose MathJax never finishes is still measured
})();</script>"""


def chromium() -> str | None:
    """A Chromium executable; Debian's package is installed when missing and we are root."""
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    if hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        for cmd in (["apt-get", "install", "-y", "-qq", "chromium"], ["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "chromium"]):
            subprocess.run(cmd, capture_output=True, timeout=600)
            if cmd[1] == "install" and shutil.which("chromium"):
                return shutil.which("chromium")
    return None


def instrument(text: str, page: Path, timeout_ms: int = BUDGET_MS - 5000) -> str:
    """The page's HTML with the recording and measuring scripts and a <base> pointing at ``page``."""
    head = f'<base href="{page.resolve().as_uri()}">' + _HEAD
    tail = _TAIL.replace("__MARK__", MARK).replace("__TIMEOUT__", str(timeout_ms))
    match = re.search(r"<head[^>]*>", text, flags=re.I)
    text = text[: match.end()] + head + text[match.end():] if match else head + text
    i = text.lower().rfind("</body>")
    return text[:i] + tail + text[i:] if i >= 0 else text + tail


def dump_dom(browser: str, url: str, width: int, height: int = HEIGHT, budget_ms: int = BUDGET_MS) -> str:
    with tempfile.TemporaryDirectory(prefix="fz-chromium-") as profile:
        cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--hide-scrollbars",
               f"--window-size={width},{height}", f"--virtual-time-budget={budget_ms}", "--dump-dom", url]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=budget_ms / 1000 + 90)
        return done.stdout


def read_report(dom: str) -> dict | None:
    match = re.search(rf'id="{MARK}"[^>]*data-report="([^"]*)"', dom)
    if not match:
        return None
    return json.loads(base64.b64decode(match.group(1)).decode())


def frame(page: Path, width: int, height: int = HEIGHT) -> str:
    """A page that shows ``page`` in a ``width``-px frame and copies the report it posts into its DOM.

    Chromium does not make a window narrower than 500 px, so a phone's width is a frame's."""
    return (f'<!DOCTYPE html><html><head><meta charset="utf-8"></head><body style="margin:0">'
            f'<iframe src="{page.name}" style="border:0;width:{width}px;height:{height}px"></iframe>'
            f'<script>window.addEventListener("message", function (e) {{ if (e.data && e.data.fzReport) {{'
            f' var d = document.createElement("div"); d.id = "{MARK}"; d.setAttribute("data-report", e.data.fzReport);'
            f' document.body.appendChild(d); }} }});</script></body></html>')


def check_page(browser: str, page: Path, width: int) -> dict:
    """Open ``page`` at ``width`` px and return its report ({"defects": [...], ...})."""
    with tempfile.TemporaryDirectory(prefix="fz-page-") as tmp:
        copy = Path(tmp) / page.name
        copy.write_text(instrument(page.read_text(encoding="utf-8"), page), encoding="utf-8")
        url = copy.as_uri()
        if width < MIN_WINDOW:
            (Path(tmp) / "frame.html").write_text(frame(copy, width), encoding="utf-8")
            url = (Path(tmp) / "frame.html").as_uri()
        dom = dump_dom(browser, url, max(width, MIN_WINDOW))
    report = read_report(dom)
    if report is None:
        return {"width": width, "defects": [{"kind": "checker", "message": "the page wrote no report (it did not finish loading)"}]}
    return report


def redirect_target(page: Path) -> Path | None:
    """The page a meta-refresh stub (the book's index.html) sends the reader to."""
    match = re.search(r'http-equiv="Refresh"[^>]*url=([^"\s>]+)', page.read_text(encoding="utf-8"), flags=re.I)
    return (page.parent / match.group(1)).resolve() if match else None


def check_redirect(browser: str, page: Path, width: int) -> dict:
    """A redirect stub passes when Chromium, opening it, lands on the page it names."""
    target = redirect_target(page)
    defects = []
    if not target.exists():
        defects.append({"kind": "redirect", "message": f"redirects to a missing page {target}"})
    else:
        title = re.search(r"<title>(.*?)</title>", target.read_text(encoding="utf-8"), flags=re.S).group(1)
        landed = re.search(r"<title>(.*?)</title>", dump_dom(browser, page.as_uri(), max(width, MIN_WINDOW),
                                                             budget_ms=5000), flags=re.S)
        if not landed or html.unescape(landed.group(1)).strip() != html.unescape(title).strip():
            defects.append({"kind": "redirect", "message": f"did not land on {target.name}"})
    return {"width": width, "defects": defects}


def pages(html: Path = HTML) -> list[Path]:
    """The book's pages: index.html and book/*.html."""
    return [html / "index.html"] + sorted((html / "book").glob("*.html"))


def toc_pages() -> list[str]:
    """The pages _toc.yml names, as paths under _build/html (known before the book is built)."""
    import yaml

    names: list[str] = []

    def walk(node):
        if isinstance(node, dict):
            for key in ("root", "file"):
                if isinstance(node.get(key), str):
                    names.append(re.sub(r"\.(md|ipynb)$", "", node[key]) + ".html")
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(yaml.safe_load((ROOT / "_toc.yml").read_text()))
    return ["index.html"] + sorted(set(names))


def check_all(browser: str, targets: list[Path], widths=WIDTHS, jobs: int = JOBS) -> dict[tuple[str, int], dict]:
    """Reports of every (page, width), ``jobs`` Chromium instances at a time."""
    def one(job):
        page, width = job
        run = check_redirect if redirect_target(page) else check_page
        return (page.relative_to(HTML).as_posix(), width), run(browser, page, width)

    with ThreadPoolExecutor(max_workers=jobs) as pool:
        return dict(pool.map(one, [(p, w) for p in targets for w in widths]))


def format_defect(page: str, width: int, d: dict) -> str:
    where = f"{page} @{width}px"
    if d["kind"] == "overflow":
        return (f"{where}: overflow ({d['what']}) {d['element']} {d['how']} {d['by']} by {d['px']} px"
                f" [section '{d['section']}'] «{d['text'][:50]}»")
    if d["kind"] == "page-overflow":
        return f"{where}: page-overflow by {d['px']} px, widest {d['element']} [section '{d['section']}'] «{d['text']}»"
    if d["kind"] == "split-word":
        return f"{where}: split-word «{d['word'][:40]}» in {d['element']} [section '{d['section']}']"
    if d["kind"] == "alt":
        return f"{where}: alt: <img src=…/{d['src']}…> {d['problem']} [section '{d['section']}']"
    return f"{where}: {d['kind']}: {d.get('message', '')}"


def scrolling(reports: dict[tuple[str, int], dict]) -> tuple[Counter, list[str]]:
    """What scrolls sideways inside its box: not a defect, but a formula that scrolls at 1280 px
    is one to break over lines, and code that scrolls is wider than its cell."""
    counts: Counter = Counter()
    lines = []
    for (page, width), report in sorted(reports.items()):
        for d in report.get("scrolled", []):
            counts[f"{d['what']} @{width}px"] += 1
            lines.append(f"{page} @{width}px: {d['what']} {d['element']} scrolls by {d['px']} px"
                         f" [section '{d['section']}'] «{d['text'][:40]}»")
    return counts, lines


def summary(reports: dict[tuple[str, int], dict]) -> tuple[Counter, list[str]]:
    counts: Counter = Counter()
    lines = []
    for (page, width), report in sorted(reports.items()):
        for d in report["defects"]:
            counts[d["kind"] if d["kind"] != "overflow" else f"overflow:{d['what']}"] += 1
            lines.append(format_defect(page, width, d))
    return counts, lines


# --- pytest ------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def browser() -> str:
    found = chromium()
    if not found:
        reason = "no Chromium found and it could not be installed (apt-get install chromium): browser test skipped"
        print(reason, file=sys.stderr)
        pytest.skip(reason)
    return found


@pytest.fixture(scope="session")
def book_reports(browser) -> dict[tuple[str, int], dict]:
    if not (HTML / "index.html").exists():
        subprocess.run(["make", "book"], cwd=ROOT, check=True)
    return check_all(browser, pages())


DEFECTIVE_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>article { width: 300px; } .nowrap { white-space: nowrap; } .clip { overflow: hidden; }
.scroller { overflow-x: auto; }</style></head><body><main role="main"><article class="bd-article">
<h2>Code</h2><pre id="wide-pre">{line}</pre>
<div class="highlight scroller"><pre id="scrolling-pre">{line}</pre></div>
<h2>Table</h2><table id="wide-table"><tr>{cells}</tr></table>
<div class="scroller"><table id="scrolling-table"><tr>{cells}</tr></table></div>
<table style="width: 60px"><tr><td id="split-cell"><p style="overflow-wrap: anywhere">unbreakablewordinacell</p></td>
<td id="hyphen-cell"><p>Fashion-MNIST</p></td></tr></table>
<h2>Math</h2><div class="clip"><div class="math nowrap" id="wide-math">\\({formula}\\)</div></div>
<div class="math" id="unreachable-math" style="display: flex; flex-direction: row-reverse; overflow-x: auto">
<div style="width: 100%; flex-shrink: 0"><span class="nowrap">{formula}</span></div></div>
<h2>Figures</h2><img id="hash-alt" alt="3f2a9c0b7d1e4f5a6b7c8d9e0f1a2b3c.png" src="data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7">
<img id="no-alt" src="data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7">
<img id="good-alt" alt="Loss curves of the three methods" src="data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7">
<img id="missing" alt="A figure whose file is missing" src="missing-figure.png">
</article></main>
<script>setTimeout(function () { throw new Error("boom from the test page"); }, 10);</script>
</body></html>"""


def _defective_page(tmp_path: Path) -> Path:
    page = tmp_path / "defects.html"
    page.write_text(DEFECTIVE_PAGE
                    .replace("{line}", "x = " + " + ".join(f"variable_{i}" for i in range(40)))
                    .replace("{cells}", "".join(f"<td>column_{i}_value</td>" for i in range(20)))
                    .replace("{formula}", " + ".join(f"a_{{{i}}} b_{{{i}}}" for i in range(60))))
    return page


def test_checker_catches_each_defect_class(browser, tmp_path):
    """The checker on a hand-made page with one defect of each class (and scrolling twins that are fine)."""
    report = check_page(browser, _defective_page(tmp_path), 1280)
    by_kind = Counter(d["kind"] if d["kind"] != "overflow" else f"overflow:{d['what']}" for d in report["defects"])
    ids = {d.get("element") or "" for d in report["defects"]}  # some defects name no element
    lines = [format_defect("defects.html", 1280, d) for d in report["defects"]]
    assert report["width"] == 1280
    assert by_kind["overflow:code"] >= 1 and "pre#wide-pre" in ids, lines
    assert by_kind["overflow:table"] >= 1 and "table#wide-table" in ids, lines
    assert by_kind["overflow:math"] >= 1 and any(i.startswith("div#wide-math") for i in ids), lines
    assert any(d.get("element") == "div#unreachable-math.math" and d["how"] == "unreachable in"
               for d in report["defects"]), lines
    assert "pre#scrolling-pre" not in ids and "table#scrolling-table" not in ids, lines
    split = [d for d in report["defects"] if d["kind"] == "split-word"]
    assert [(d["element"], d["word"]) for d in split] == [("td#split-cell",
                                                           "unbreakablewordinacell")], lines
    assert by_kind["page-overflow"] == 1, lines
    assert any("missing-figure.png" in d.get("message", "") for d in report["defects"] if d["kind"] == "load-error"), lines
    alts = {d["element"]: d["problem"] for d in report["defects"] if d["kind"] == "alt"}
    assert alts.keys() == {"img#hash-alt", "img#no-alt"}, lines
    assert "file name or hash" in alts["img#hash-alt"] and "no alt" in alts["img#no-alt"]
    assert any("boom from the test page" in d.get("message", "") for d in report["defects"] if d["kind"] == "js-error"), lines
    assert {d["element"] for d in report["scrolled"]} >= {"div.highlight.scroller", "div.scroller"}, report["scrolled"]


MATHJAX_PAGE = r"""<!DOCTYPE html><html><head><meta charset="utf-8">
<style>article { width: 480px; }
/* the theme's rules (pydata-sphinx-theme 0.17, written for MathJax 3) that cut the book's formulas */
div.math, span.math { align-items: center; display: flex; max-width: 100%; overflow: hidden; }
div.math { flex-direction: row-reverse; }</style>
{fix}
<script type="text/x-mathjax-config">MathJax.Hub.Config({"tex2jax": {"processClass": "math",
 "ignoreClass": "tex2jax_ignore", "inlineMath": [["\\(", "\\)"]], "displayMath": [["\\[", "\\]"]]},
 "HTML-CSS": {"webFont": "STIX-Web", "availableFonts": [], "preferredFont": null, "imageFont": null}});</script>
<script src="{mathjax}?config=TeX-AMS-MML_HTMLorMML-full"></script>
</head><body class="tex2jax_ignore"><article class="bd-article"><h2>A long formula</h2>
<div class="math" id="long-formula"><span class="eqno">(1)</span>\[{formula}\]</div>
</article></body></html>"""


def _mathjax() -> Path:
    import jupyter_server_mathjax  # the pinned MathJax 2.7 the book vendors

    return Path(jupyter_server_mathjax.__file__).parent / "static" / "MathJax.js"


@pytest.mark.parametrize("fixed", [False, True], ids=["theme-rules", "with-feasible-css"])
def test_checker_catches_a_formula_the_theme_cuts(browser, tmp_path, fixed):
    """A display formula typeset by the book's MathJax 2 under the theme's rules is cut at its
    box's edge (the defect of Props. 3-7 at 1280 px), and the checker says so; the book's CSS
    (_ext/static/feasible.css) makes it scroll instead."""
    css = (ROOT / "_ext" / "static" / "feasible.css").read_text() if fixed else ""
    formula = " + ".join(rf"\phi_{{U,{i}}} \phi_{{C,{i}}}" for i in range(30))
    page = tmp_path / "formula.html"
    page.write_text(MATHJAX_PAGE.replace("{fix}", f"<style>{css}</style>").replace(
        "{mathjax}", _mathjax().as_uri()).replace("{formula}", formula))
    report = check_page(browser, page, 1280)
    assert report["typeset"] >= 1, report  # MathJax ran
    lines = [format_defect("formula.html", 1280, d) for d in report["defects"]]
    if fixed:
        assert lines == [], lines
        assert any(d["what"] == "math" for d in report["scrolled"]), report["scrolled"]
    else:
        assert any(d["kind"] == "overflow" and d["what"] == "math" and d["how"] == "clipped by"
                   for d in report["defects"]), lines


def test_checker_passes_a_clean_page(browser, tmp_path):
    page = tmp_path / "clean.html"
    page.write_text('<!DOCTYPE html><html><head><meta name="viewport" content="width=device-width">'
                    '</head><body><article class="bd-article"><p>Short.</p><pre>x = 1</pre>'
                    '<table><tr><td>1</td></tr></table><img alt="A dot" src="data:image/gif;base64,'
                    'R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7"></article></body></html>')
    for width in WIDTHS:
        report = check_page(browser, page, width)
        assert report["width"] == width
        assert report["defects"] == [], report


@pytest.mark.browser
@pytest.mark.parametrize("page", toc_pages())
def test_page_reads_well_in_a_browser(book_reports, page):
    """Every page of the rendered book, at 1280 px and at 400 px: no defect of any class."""
    found = {(p, w): r for (p, w), r in book_reports.items() if p == page}
    assert found, f"{page} was not rendered into {HTML}"
    lines = [format_defect(p, w, d) for (p, w), r in sorted(found.items()) for d in r["defects"]]
    assert not lines, f"{len(lines)} defects:\n" + "\n".join(lines)


@pytest.mark.browser
def test_the_first_pages_verdict_table_shows_every_column_at_1280(book_reports):
    """The verdict table is what most readers open the book for: at 1280 px none of its columns
    hides behind a sideways scroll (the book's CSS sets its font for that)."""
    scrolled = book_reports[("book/intro.html", 1280)].get("scrolled", [])
    assert not [d for d in scrolled if d["what"] == "table"], scrolled


@pytest.mark.browser
def test_every_rendered_page_is_in_the_toc(book_reports):
    rendered = {p for p, _ in book_reports}
    assert rendered == set(toc_pages()), rendered ^ set(toc_pages())


def main(argv: list[str]) -> int:
    browser = chromium()
    if not browser:
        print("no Chromium found", file=sys.stderr)
        return 2
    flags = {a for a in argv if a.startswith("--")}
    argv = [a for a in argv if not a.startswith("--")]
    targets = [HTML / a if not Path(a).is_absolute() else Path(a) for a in argv] or pages()
    reports = check_all(browser, targets)
    counts, lines = summary(reports)
    if "--scrolling" in flags:
        moving, which = scrolling(reports)
        print("\n".join(which))
        print(f"\n{sum(moving.values())} boxes scroll sideways:",
              ", ".join(f"{k} {v}" for k, v in sorted(moving.items())) or "none", end="\n\n")
    print("\n".join(lines))
    print(f"\n{sum(counts.values())} defects on {len({p for p, _ in reports})} pages x {len(WIDTHS)} widths:",
          ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
