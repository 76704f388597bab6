"""``report.html`` in a real headless browser (Chromium): loads offline, no console errors, plots render,
the trials filter works. Skips cleanly where no browser is installed (CI installs one: see .ci/run)."""
import json
import os
import re
import shutil
import subprocess

import pytest
from test_report import TRIALS, write_fake_run

from lkscale.report import make_report

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
# Injected first into a copy of the page: records console.error calls, uncaught errors, failed resource
# loads (capture phase) and every resource not loaded from the file itself, then writes them into the DOM.
PROBE_HEAD = """<script>
window.__probe={errors:[],remote:[]};
(function(){var ce=console.error;console.error=function(){window.__probe.errors.push('console.error: '+
[].map.call(arguments,String).join(' '));return ce.apply(console,arguments);};
window.addEventListener('error',function(e){window.__probe.errors.push('error: '+(e.message||
(e.target&&(e.target.src||e.target.href))||'resource'));},true);
window.addEventListener('unhandledrejection',function(e){window.__probe.errors.push('rejection: '+e.reason);});})();
</script>"""
PROBE_TAIL = """<script>
window.addEventListener('load',function(){setTimeout(function(){
performance.getEntriesByType('resource').forEach(function(r){if(r.name.indexOf('file:')!==0){window.__probe.remote.push(r.name);}});
var st=document.getElementById('f-state');st.value='pruned';st.dispatchEvent(new Event('change'));
window.__probe.filtered=document.getElementById('f-count').textContent;
window.__probe.visible=[].filter.call(document.getElementById('trials-body').rows,function(r){return r.style.display!=='none';}).length;
var pre=document.createElement('pre');pre.id='probe';pre.textContent=JSON.stringify(window.__probe);document.body.appendChild(pre);
},500);});
</script>"""


def _browser() -> str:
    for name in (os.environ.get("LKSCALE_BROWSER"), *BROWSERS):
        path = name and shutil.which(name)
        if path:
            return path
    pytest.skip("no Chromium/Chrome on PATH (apt-get install chromium)")


def _chrome(browser: str, tmp, *args: str, timeout: int = 120) -> subprocess.CompletedProcess:
    """Headless, offline (every network request goes to a dead proxy), its own profile folder."""
    cmd = [browser, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
           f"--user-data-dir={tmp / 'profile'}", "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
           "--enable-logging=stderr", "--v=1", "--virtual-time-budget=10000", *args]
    env = dict(os.environ, HOME=str(tmp))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def _console_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if ":CONSOLE" in line]


def _probe(dom: str) -> dict:
    m = re.search(r"<pre id=\"probe\">(.*?)</pre>", dom, re.S)
    assert m, "the probe did not run: the page's scripts did not load"
    return json.loads(m.group(1).replace("&quot;", '"').replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))


def _with_probe(src: str, dst) -> str:
    html = open(src, encoding="utf-8").read()
    head = html.index("<head>") + len("<head>")
    html = html[:head] + PROBE_HEAD + html[head:]
    html = html.replace("</body>", PROBE_TAIL + "</body>")
    with open(dst, "w", encoding="utf-8") as f:
        f.write(html)
    return f"file://{dst}"


@pytest.fixture(scope="module")
def report_html(tmp_path_factory):
    run = write_fake_run(str(tmp_path_factory.mktemp("browser") / "run"), max_latency_ms=None)
    make_report(run)
    return os.path.join(run, "report.html")


def test_probe_catches_errors(tmp_path):
    """Negative control: the checks below do see a console error, an uncaught error and a remote load."""
    browser = _browser()
    page = tmp_path / "bad.html"
    page.write_text("<!DOCTYPE html><html><head></head><body><table><tbody id='trials-body'></tbody></table>"
                    "<select id='f-state'><option>pruned</option></select><span id='f-count'></span>"
                    "<img src='http://192.0.2.1/x.png'><script>console.error('boom'); undefinedFunction();</script>"
                    "</body></html>")
    res = _chrome(browser, tmp_path, "--dump-dom", _with_probe(str(page), tmp_path / "probed.html"))
    probe = _probe(res.stdout)
    assert any("boom" in e for e in probe["errors"]) and any("undefinedFunction" in e for e in probe["errors"])
    assert probe["remote"] == ["http://192.0.2.1/x.png"]
    assert any("undefinedFunction" in line for line in _console_lines(res.stderr))


@pytest.fixture(scope="module")
def report_html_trained_only(tmp_path_factory):
    """A run where every trial was trained (no infeasible or failed ones: the strip under a front is empty)."""
    run = write_fake_run(str(tmp_path_factory.mktemp("browser") / "run"),
                         trials=[t for t in TRIALS if t[0] not in ("infeasible", "failed")])
    make_report(run)
    return os.path.join(run, "report.html")


@pytest.mark.parametrize("page", ["report_html", "report_html_trained_only"])
def test_report_html_offline_no_errors_plots_render(page, request, tmp_path):
    browser = _browser()
    report_html = request.getfixturevalue(page)
    n_trials = len(TRIALS) if page == "report_html" else 11
    html = open(report_html, encoding="utf-8").read()
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=['\"]?(https?:)?//", html), "external asset"
    assert "see report.md" not in html.lower()
    res = _chrome(browser, tmp_path, "--dump-dom", f"file://{report_html}")
    assert res.returncode == 0, res.stderr[-2000:]
    assert _console_lines(res.stderr) == []  # the page logs nothing: no errors, no warnings
    dom = res.stdout
    plots = re.findall(r"<div[^>]+class=\"[^\"]*js-plotly-plot", dom)
    assert len(plots) == 3  # two fronts + one kernel-scaling figure
    assert dom.count('class="main-svg"') >= len(plots)
    assert len(re.findall(r'class="point"', dom)) >= n_trials  # markers drawn
    assert "reference point (" in dom  # marked (at the edge when beyond the data)
    # both fronts keep their x axis (title and tick labels) even with nothing in the "not trained" strip
    assert dom.count('class="x2title"') == 2 and dom.count('class="x2tick"') >= 6
    rows = re.search(r"<tbody id=\"trials-body\">(.*?)</tbody>", dom, re.S).group(1)
    assert rows.count("<tr") == n_trials


def test_report_html_filter_and_probe(report_html, tmp_path):
    browser = _browser()
    res = _chrome(browser, tmp_path, "--dump-dom", _with_probe(report_html, tmp_path / "probed.html"))
    probe = _probe(res.stdout)
    assert probe["errors"] == [] and probe["remote"] == []
    assert probe["filtered"] == "2 of 13 trials" and probe["visible"] == 2  # two pruned trials in the fake run


def test_report_html_screenshot_not_blank(report_html, tmp_path):
    from PIL import Image

    browser = _browser()
    shot = tmp_path / "shot.png"
    res = _chrome(browser, tmp_path, "--hide-scrollbars", "--window-size=1280,2400", f"--screenshot={shot}",
                  f"file://{report_html}")
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    im = Image.open(shot).convert("RGB")
    assert im.size == (1280, 2400)
    colours = im.getcolors(maxcolors=1 << 20) or []
    red = sum(n for n, (r, g, b) in colours if r > 180 and g < 80 and b < 80)  # the red Pareto front line/stars
    assert len(colours) > 50 and red > 500
