"""`unirain report RUN`: one self-contained HTML file that is enough to judge a run.

The funnel, the rejects (counts by stage × reason and a sample with details), every chart the stages
wrote (inline), the decision gallery (candidate beside its retrieved reference, scores, each judge's
vote), the judges' agreement (`votes.md`) and the training/evaluation results beside the rainy
inputs' own scores. No network and no file links: images are `data:` URIs, the page has no scripts
or external styles, so it opens the same from a mail attachment as from the run folder.
"""
from __future__ import annotations

import html
import re
import time
from pathlib import Path

import pandas as pd

from data_manifests import RunLayout

from .gallery import charts, decision_gallery, gallery_html, image_uri, rejects_summary

STYLE = """
body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;margin:.5em 0;font-size:.9em}th,td{border:1px solid #ccc;padding:.25em .5em;vertical-align:top}
th{background:#f3f3f3}td.num{text-align:right}code{font-size:.9em}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #ddd}figcaption{color:#555;font-size:.85em}
table.gallery img{max-width:160px;max-height:160px}.kept{color:#176b1a}.gone{color:#a01818}
table.gallery td:first-child{max-width:18em}table.gallery td:nth-child(4),table.gallery td:nth-child(5){white-space:nowrap}
section{overflow-x:auto}
.muted{color:#666}
"""


def _md(text: str) -> str:
    """Markdown (the reports' own .md files) → HTML; raw HTML in them is escaped, not passed through."""
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table").render(text)


def _table(frame: pd.DataFrame) -> str:
    if frame is None or frame.empty:
        return "<p class='muted'>(none)</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in frame.columns)
    body = []
    for row in frame.itertuples(index=False):
        cells = []
        for v in row:
            num = isinstance(v, (int, float)) and not isinstance(v, bool)
            text = "" if v is None or (isinstance(v, float) and v != v) else (f"{v:.4g}" if isinstance(v, float) else str(v))
            cells.append(f"<td{' class=num' if num else ''}>{html.escape(text)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _section(title: str, body: str) -> str:
    return f"<section><h2>{html.escape(title)}</h2>\n{body}\n</section>"


def _figure(path: Path, root: Path) -> str:
    try:
        uri = _inline(path)
    except (OSError, ValueError) as exc:
        return f"<p class='muted'>{html.escape(str(path))}: unreadable ({html.escape(str(exc))})</p>"
    rel = path.relative_to(root) if path.is_relative_to(root) else path
    return (f"<figure><img src='{uri}' alt='{html.escape(path.name)}'>"
            f"<figcaption>{html.escape(str(rel))}</figcaption></figure>")


MD_IMAGE = re.compile(r"!\[([^\]]*)\]\(([^)\s]+)\)")
BIG_IMAGE = 200_000  # bytes: a larger PNG (an evaluation grid) is inlined as a JPEG of at most 960 px


def _inline(path: Path) -> str:
    big = path.suffix.lower() != ".png" or path.stat().st_size > BIG_IMAGE
    return image_uri(path, max_side=960, quality=85) if big else image_uri(path)


def _md_file(path: Path, shown: set[Path]) -> str | None:
    """A report's markdown as HTML, its local images (relative links) inline; `shown` collects them."""
    if not path.is_file():
        return None

    def inline(m: re.Match) -> str:
        alt, target = m.group(1), m.group(2)
        if target.startswith(("data:", "http:", "https:")):
            return m.group(0) if target.startswith("data:") else f"({alt}: {target})"
        file = (path.parent / target).resolve()
        try:
            uri = _inline(file)
        except (OSError, ValueError) as exc:
            return f"({alt}: {target} unreadable: {exc})"
        shown.add(file)
        return f"![{alt}]({uri})"

    body = _md(MD_IMAGE.sub(inline, path.read_text(errors="replace")))
    return re.sub(r"<(/?)h([1-4])>", lambda m: f"<{m.group(1)}h{min(int(m.group(2)) + 2, 6)}>", body)  # under our h2


def _guarded(title: str, body) -> str:
    """A section whose manifests cannot be read (another schema version, a damaged shard) says why
    in its place; the rest of the report is still written."""
    from data_manifests.errors import ManifestError

    try:
        return _section(title, body())
    except (ManifestError, OSError, ValueError) as exc:
        return _section(title, f"<p class='gone'>could not be read: {html.escape(str(exc))}</p>")


def build_report(run_dir: str | Path, gallery_size: int = 8) -> str:
    """The report of run folder `run_dir` as one HTML string."""
    from tasks.funnel import funnel_table

    run = RunLayout.at(run_dir)
    info = run.info()
    root = run.root
    parts = [f"<h1>UniRain run <code>{html.escape(root.name)}</code></h1>",
             f"<p>Run folder: <code>{html.escape(str(root))}</code><br>"
             f"Run id: <code>{html.escape(str(info.get('run_id', '-')))}</code>, created {html.escape(str(info.get('created', '-')))}, "
             f"{info.get('num_shards')} shards<br>Report written {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}</p>"]

    parts.append(_guarded("Funnel", lambda: "<p>Per source and stage: rows in, kept, rejected (by reason).</p>"
                          + _table(funnel_table(run))))

    def rejects() -> str:
        counts, sample = rejects_summary(run)
        return ("<h3>Counts by stage × reason</h3>" + _table(counts)
                + f"<h3>Sample (up to 3 per stage × reason), from <code>{html.escape(str(run.rejects))}</code></h3>"
                + _table(sample))

    parts.append(_guarded("Rejects", rejects))
    parts.append(_guarded("Decision gallery", lambda: (
        "<p>Distilled and rejected pairs, each synthetic candidate beside the real-rain reference retrieval found "
        "for it; retrieval scores (↓ lower is better, ↑ higher is better) and every judge's vote with its p_real.</p>"
        + gallery_html(decision_gallery(run, per_outcome=gallery_size)))))

    shown: set[Path] = set()
    parts.append(_guarded("Judges and their agreement", lambda: _md_file(run.reports / "votes.md", shown)
                          or "<p class='muted'>No votes.md (the run has not been selected).</p>"))

    def results() -> str:
        out = []
        history = run.reports / "training_history.csv"
        if history.is_file():
            out.append("<h3>Training: last validation</h3>" + _training_table(history))
        for name in ("evaluation.md", "ablation.md"):  # each carries its own heading
            body = _md_file(run.reports / name, shown)
            if body:
                out.append(body)
        return "".join(out) or "<p class='muted'>No training or evaluation reports in this run.</p>"

    parts.append(_guarded("Training and evaluation", results))
    parts.append(_guarded("Charts", lambda: "".join(_figure(p, root) for p in charts(run) if p.resolve() not in shown)
                          or "<p class='muted'>No charts.</p>"))

    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>UniRain report: {html.escape(root.name)}</title><style>{STYLE}</style></head><body>"
            + "\n".join(parts) + "</body></html>\n")


def _training_table(history: Path) -> str:
    """The last validation row: per rain type the model's PSNR beside the rainy input's own."""
    frame = pd.read_csv(history)
    if frame.empty:
        return "<p class='muted'>(empty history)</p>"
    last = frame.iloc[-1]
    types = [c[len("val_psnr_"):] for c in frame.columns if c.startswith("val_psnr_")]  # the run's order
    rows = []
    for t in types:
        model, base = last.get(f"val_psnr_{t}"), last.get(f"input_psnr_{t}")
        num = lambda v, fmt: "-" if v is None or pd.isna(v) else format(v, fmt)  # noqa: E731
        rows.append({"type": t, "PSNR (dB)": num(model, ".2f"), "input PSNR": num(base, ".2f"),
                     "gain": num(model - base, "+.2f") if pd.notna(model) and pd.notna(base) else "-"})
    it = last.get("iteration")
    return (f"<p>Iteration {'-' if pd.isna(it) else int(it)}, validation split (centre crops); input = the rainy crop "
            f"itself.</p>" + _table(pd.DataFrame(rows)))


def write_report(run_dir: str | Path, out: str | Path | None = None) -> Path:
    """Write the report of `run_dir` to `out` (default RUN/reports/report.html); returns the path."""
    run = RunLayout.at(run_dir)
    run.info()  # not a run folder: a RunError naming it, before anything is written
    path = Path(out) if out else run.reports / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    text = build_report(run.root)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
