"""``report.html``: one self-contained page (tables, interactive figures, plotly.js inline; works offline)."""
from __future__ import annotations

import base64
import html
import os
import re

from lkscale.fidelity.figure import markdown_section
from lkscale.report.baselines import html_lines as baseline_lines
from lkscale.report.labels import (OBJECTIVES, STATE_MEANING, acc_text, blocks_label, dcn_label, dot, fmt_count,
                                   ms_interval_text, reparam_label)
from lkscale.report.markdown import (SCALING_HEADER, STEPS_HEADER, base_text, comparison_rows, conclusions, fit_text,
                                     front_header, front_rows, front_runtime, front_statuses, front_text, racing_lines,
                                     scaling_note, scaling_rows, settings_rows, steps_note, steps_rows, trials_note)
from lkscale.attainment import shared_replicates
from lkscale.rundir import STATES, Run, RunDir, Trial, candidates

TRIALS_HEADER = ("#", "name", "state", "block", "kernels", "depths", "widths", "DCN groups", "re-param", "params",
                 "FLOPs", "latency ms [interval]", "val acc", "replicate", "epochs", "error / notes")
_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1180px;margin:0 auto;padding:0 16px 40px;
color:#222;line-height:1.45}
h1{font-size:1.6em;margin:.8em 0 .2em}h2{font-size:1.25em;border-bottom:1px solid #ddd;padding-bottom:.2em;margin-top:1.8em}
table{border-collapse:collapse;font-size:13px;margin:.6em 0}th,td{border:1px solid #ddd;padding:3px 7px;text-align:left}
th{background:#f4f6f8;position:sticky;top:0}tr:nth-child(even) td{background:#fafbfc}td.num{text-align:right}
code{font-size:12px}.muted{color:#666}.filters{display:flex;gap:12px;align-items:center;flex-wrap:wrap;margin:.5em 0}
.filters input{padding:3px 6px;min-width:220px}.scroll{max-height:560px;overflow:auto;border:1px solid #eee}
nav a{margin-right:14px}#trials-table td{white-space:nowrap}#trials-table td:nth-child(3){font-weight:600}
tr[data-state=complete] td:nth-child(3){color:#1f77b4}tr[data-state=pruned] td:nth-child(3){color:#d46a00}
tr[data-state=failed] td:nth-child(3){color:#d62728}tr[data-state=infeasible] td:nth-child(3){color:#7f7f7f}
tr[data-state=running] td:nth-child(3){color:#9467bd}
.conclusions{background:#f6f8fa;border:1px solid #e1e4e8;border-radius:6px;padding:6px 16px}
.conclusions li{margin:.3em 0}td.st-confirmed{color:#b31b1b;font-weight:600}td.st-tied{color:#d46a00}
tr.sig td{background:#fff4e5 !important;font-weight:600}
"""
_JS = """
(function(){
  var tb=document.getElementById('trials-body'), rows=[].slice.call(tb.rows);
  var st=document.getElementById('f-state'), fam=document.getElementById('f-family'),
      q=document.getElementById('f-text'), n=document.getElementById('f-count');
  function apply(){
    var s=st.value, f=fam.value, t=q.value.toLowerCase(), shown=0;
    rows.forEach(function(r){
      var ok=(!s||r.dataset.state===s)&&(!f||r.dataset.family===f)&&(!t||r.textContent.toLowerCase().indexOf(t)>=0);
      r.style.display=ok?'':'none'; if(ok){shown++;}
    });
    n.textContent=shown+' of '+rows.length+' trials';
  }
  [st,fam].forEach(function(e){e.addEventListener('change',apply);}); q.addEventListener('input',apply); apply();
})();
"""


def _esc(x: object) -> str:
    return html.escape(str(x))


def inline_md(text: str) -> str:
    """Escaped text with markdown ``**bold**`` and backtick code turned into HTML."""
    out = _esc(text)
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", out)


def _cell(c: str) -> str:
    cls = {"confirmed": " class='st-confirmed'", "tied": " class='st-tied'"}.get(c, "")
    return f"<td{cls}>{_esc(c.strip('`*'))}</td>"


def table(header: tuple | list, rows: list[list[str]], body_id: str = "", row_attrs: list[str] | None = None) -> str:
    """An HTML table; cells are escaped (markdown backticks around names are dropped)."""
    head = "".join(f"<th>{_esc(h)}</th>" for h in header)
    body = []
    for i, r in enumerate(rows):
        attrs = row_attrs[i] if row_attrs else ""
        cells = "".join(_cell(c) for c in r)
        body.append(f"<tr{attrs}>{cells}</tr>")
    bid = f" id='{body_id}'" if body_id else ""
    return f"<table><thead><tr>{head}</tr></thead><tbody{bid}>{''.join(body)}</tbody></table>"


def trial_row(t: Trial) -> list[str]:
    epochs = f"{t.get('epochs_done', '-')}/{t.get('epochs_budget', '-')}"
    note = t.get("error") or t.get("notes") or ""
    return [str(t.get("number", "")), str(t.name), str(t.state), blocks_label(t.get("blocks")), dot(t.get("kernels")),
            dot(t.get("depths")), dot(t.get("widths")), dcn_label(t.get("dcn_groups")), reparam_label(t.get("reparam")),
            fmt_count(t.get("params")), fmt_count(t.get("flops")),
            ms_interval_text(t.get("latency_ms"), t.get("latency_low_ms"), t.get("latency_high_ms")),
            acc_text(t.get("val_acc")), str(t.get("replicate", 0)), epochs, str(note)[:160]]


def _options(values: list[str], all_label: str) -> str:
    return f"<option value=''>{all_label}</option>" + "".join(f"<option>{_esc(v)}</option>" for v in values)


def trials_section(run: Run) -> str:
    """All trials, with a filter by state, block family and free text (inline JS, no external assets)."""
    trials = sorted(run.trials, key=lambda t: t.get("number", 0))
    states = [s for s in STATES if any(t.state == s for t in trials)]
    states += sorted({str(t.state) for t in trials} - set(states))
    families = sorted({blocks_label(t.get("blocks")) for t in trials})
    attrs = [f" data-state='{_esc(t.state)}' data-family='{_esc(blocks_label(t.get('blocks')))}'" for t in trials]
    filters = (f"<div class='filters'><label>state <select id='f-state'>{_options(states, 'all')}</select></label>"
               f"<label>block <select id='f-family'>{_options(families, 'all')}</select></label>"
               "<label>text <input id='f-text' type='search' placeholder='name, kernels, error...'></label>"
               "<span id='f-count' class='muted'></span></div>")
    return ("<h2 id='trials'>All trials</h2>" + filters + "<div class='scroll' id='trials-table'>"
            + table(TRIALS_HEADER, [trial_row(t) for t in trials], "trials-body", attrs) + "</div>")


def _summary_section(run: Run, result: dict) -> str:
    counts = result["counts"]
    rows = [[s, str(counts.get(s, 0)), STATE_MEANING[s]] for s in STATES]
    rows += [[s, str(counts[s]), ""] for s in sorted(set(counts) - set(STATES))]
    saved, budget = result["trial_epochs_saved"], result.get("trial_epochs_budget")
    return ("<h2 id='settings'>Study settings</h2>" + table(("setting", "value"), [list(r) for r in settings_rows(run, "")])
            + f"<h2 id='counts'>Trials by state ({sum(counts.values())})</h2><p>{_esc(trials_note(result))}</p>"
            + table(("state", "trials", "meaning"), rows)
            + f"<p>Trial-epochs saved by pruning: <b>{saved}</b>" + (f" of {budget} budgeted" if budget else "")
            + " (sum over pruned trials of epochs budgeted minus epochs trained).</p>")


def _front_section(key: str, result: dict, front: list[Trial], fig_html: str) -> str:
    col, xlabel, unit, _ = OBJECTIVES[key]
    fr = result["fronts"][key]
    text = "".join(f"<p>{inline_md(p)}</p>" for p in front_text(fr, col, unit, result["candidates_complete"]))
    if key == "latency":
        text += "".join(f"<p class='racing'>{inline_md(p)}</p>" for p in racing_lines(result["racing"]))
    header = front_header(front_runtime(front) if key == "latency" else None, result["confidence"])
    tab = table(header, front_rows(front, front_statuses(fr))) if front else \
        "<p><i>No complete trials yet: no front.</i></p>"
    return f"<h2 id='front-{key}'>Pareto front: validation accuracy vs {_esc(xlabel)}</h2>{text}{fig_html}{tab}"


def attainment_html(run: Run, key: str) -> str:
    """The front's uncertainty over replicates: the static Pareto PNG (median attainment surface, best-worst
    replicate band) inline, with a line saying what it shows; "" when no PNG or fewer than 2 shared replicates."""
    col = OBJECTIVES[key][0]
    done = [t for t in candidates(run.trials) if t.state == "complete" and t.get(col) is not None]
    shared = shared_replicates([t.get("replicates") or {} for t in done]) if len(done) >= 2 else []
    png = RunDir(run.path).pareto_png(key)
    if len(shared) < 2 or not os.path.isfile(png):
        return ""
    with open(png, "rb") as f:
        data = base64.b64encode(f.read()).decode()
    return (f"<p>Uncertainty of the front over the {len(shared)} replicates every complete candidate has: the dashed "
            f"line is the median attainment surface (reached by at least half of the replicates' fronts), the green "
            f"band spans the best and the worst replicate's front.</p>"
            f"<img alt='front with its attainment surfaces over replicates' src='data:image/png;base64,{data}'>")


def _steps_table(sc: dict) -> str:
    rows = steps_rows(sc)
    if not rows:
        return "<p><i>No two kernel settings of one re-param line both have a complete result: no step to test.</i></p>"
    attrs = [" class='sig'" if r[3].startswith("**") else "" for r in rows]  # decided better or worse
    return f"<p>{inline_md(steps_note(sc))}</p>" + table(STEPS_HEADER, rows, "", attrs)


def _scaling_section(run: Run, scalings: list[dict], fig_html: list[str]) -> str:
    out = ["<h2 id='scaling'>Kernel-size scaling</h2>"]
    if not scalings:
        out.append("<p><i>This study does not vary kernel size within one base architecture: no scaling table.</i></p>")
    for sc, fig in zip(scalings, fig_html):
        if len(scalings) > 1:
            out.append(f"<h3>{_esc(blocks_label(sc['base']['blocks']))}</h3>")
        out += [f"<p>{_esc(base_text(sc))}</p>", fig, table(SCALING_HEADER, scaling_rows(sc)), _steps_table(sc),
                "<ul>" + "".join(f"<li>re-param {_esc(rep)}: {_esc((line['sentence'] + ' ' + fit_text(line)).strip())}</li>"
                                 for rep, line in sc["lines"].items()) + "</ul>",
                "<p>Relative change from the smallest to the largest kernel setting, beside RepLKNet (Ding et al. 2022, "
                "Table 5):</p>", table(("", "from", "to", "params", "FLOPs", "latency"), comparison_rows(run, sc)),
                f"<p class='muted'>{_esc(scaling_note(sc))}</p>"]
    return "".join(out)


def _conclusions_section(result: dict, scalings: list[dict]) -> str:
    items = [ln[2:] for ln in conclusions(result, scalings) if ln.startswith("- ")]
    return ("<h2 id='conclusions'>Conclusions</h2><div class='conclusions'><ul>"
            + "".join(f"<li>{inline_md(i)}</li>" for i in items) + "</ul></div>")


def _fidelity_section(run: Run) -> str:
    """``lkscale fidelity``'s results (summary.json ``fidelity``): its markdown as text, its scatter inline."""
    entry = run.summary.get("fidelity")
    if not entry:
        return ""
    png = run.dir.fidelity_png
    img = ""
    if os.path.isfile(png):
        with open(png, "rb") as f:
            img = f"<img alt='proxy vs high-fidelity accuracy' src='data:image/png;base64,{base64.b64encode(f.read()).decode()}'>"
    lines = [ln for ln in markdown_section(entry).splitlines() if ln.strip() and not ln.startswith(("#", "!["))]
    return "<h2 id='fidelity'>Proxy fidelity</h2>" + md_blocks(lines) + img


def _baselines_section(run: Run, front: list, result: dict) -> str:
    """The study's baselines against the latency front (``lkscale.report.baselines``); '' without any."""
    lines = baseline_lines(run, front, result.get("confidence", 0.95))
    return "<h2 id='baselines'>Baselines</h2>" + md_blocks([ln[2:] if ln.startswith("- ") else ln for ln in lines]) \
        if lines else ""


def md_blocks(lines: list[str]) -> str:
    """Markdown lines as HTML: runs of ``| a | b |`` rows as one table (header, separator, rows), the rest as
    paragraphs."""
    out, rows = [], []
    for ln in lines + [""]:
        if ln.startswith("|"):
            rows.append([c.strip() for c in ln.strip().strip("|").split("|")])
            continue
        if rows:
            body = [r for r in rows[1:] if not all(set(c) <= set("-: ") for c in r)]
            out.append(table(rows[0], body))
            rows = []
        if ln.strip():
            out.append(f"<p>{inline_md(ln)}</p>")
    return "".join(out)


def html_report(run: Run, result: dict, fronts: dict, scalings: list[dict], pareto_figs: dict, scaling_figs: list) -> str:
    """The page; ``pareto_figs`` maps objective -> plotly figure, ``scaling_figs`` one figure per scaling."""
    figs = [pareto_figs[k] for k in OBJECTIVES] + list(scaling_figs)
    parts = [f.to_html(full_html=False, include_plotlyjs=(i == 0), config={"displaylogo": False})
             for i, f in enumerate(figs)]
    pareto_html, scaling_html = parts[:len(OBJECTIVES)], parts[len(OBJECTIVES):]
    nav = ("<nav><a href='#conclusions'>conclusions</a><a href='#settings'>settings</a><a href='#counts'>counts</a>"
           + "".join(f"<a href='#front-{k}'>front vs {k}</a>" for k in OBJECTIVES)
           + "<a href='#scaling'>kernel scaling</a><a href='#trials'>all trials</a></nav>")
    body = (f"<h1>lkscale report: {_esc(run.name)}</h1><p class='muted'>Run folder: <code>{_esc(run.path)}</code></p>"
            + nav + _conclusions_section(result, scalings) + _summary_section(run, result)
            + "".join(_front_section(k, result, fronts[k], pareto_html[i] + attainment_html(run, k))
                      for i, k in enumerate(OBJECTIVES))
            + _baselines_section(run, fronts["latency"], result) + _scaling_section(run, scalings, scaling_html)
            + _fidelity_section(run) + trials_section(run))
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>lkscale report: {_esc(run.name)}</title>"
            f"<meta name='viewport' content='width=device-width, initial-scale=1'><style>{_CSS}</style></head>"
            f"<body>{body}<script>{_JS}</script></body></html>")
