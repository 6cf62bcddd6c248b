"""What a person needs to judge a run without opening files: inline images, rejects, decision gallery.

Pure functions over a run folder (no Prefect): `flows.artifacts` turns them into UI artifacts and
`flows.report` into one HTML file. Images travel inside as `data:` URIs because a browser showing the
Prefect UI (or an HTML file) refuses `file://` links; thumbnails are small JPEGs so a gallery of a few
dozen pairs stays in the hundreds of kB.
"""
from __future__ import annotations

import base64
import html
import io
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from data_manifests import RunLayout, read_manifest, shard_files
from data_manifests.levels import RETRIEVAL_LEVELS, SCORE_COLUMNS

# select-stage outcomes that had a reference and (mostly) votes: the decisions worth looking at
DECIDED_REJECTS = ("voted_out", "below_threshold", "judge_error", "undecided")


def image_uri(path: str | Path, max_side: int | None = None, quality: int = 75) -> str:
    """An image file as a data URI: PNG charts as they are (unless `max_side` asks for a smaller
    copy), anything resized as JPEG. Raises OSError/ValueError on an unreadable file."""
    path = Path(path)
    if max_side is None and path.suffix.lower() == ".png":
        return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")
    from PIL import Image

    with Image.open(path) as img:
        img = img.convert("RGB")
        if max_side:
            img.thumbnail((max_side, max_side))
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=quality)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def thumbnail_uri(path: str | Path, max_side: int = 112) -> str | None:
    """A small JPEG data URI, or None when the file is missing or unreadable (the gallery says so)."""
    try:
        return image_uri(path, max_side=max_side, quality=70)
    except (OSError, ValueError, SyntaxError):
        return None


def charts(run: RunLayout) -> list[Path]:
    """Every chart a stage wrote to RUN/reports (PNG files, evaluation grids included), in a stable order."""
    if not run.reports.is_dir():
        return []
    top = sorted(p for p in run.reports.glob("*.png") if p.is_file())
    grids = sorted(p for p in run.reports.glob("*_grids/**/*.png") if p.is_file())
    return top + grids


# --- rejects ----------------------------------------------------------------------------------
def read_rejects(run: RunLayout) -> pd.DataFrame:
    from tasks.funnel import read_intact

    if not shard_files(run.rejects):
        return pd.DataFrame(columns=["item_id", "stage", "reason", "detail", "source", "path"])
    return read_intact(run.rejects, "rejects")


def rejects_summary(run: RunLayout, per_reason: int = 3) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(counts: one row per stage with a column per reason, total last; sample: up to `per_reason`
    rows of each stage × reason with their detail). Empty frames for a run without rejects."""
    rejects = read_rejects(run)
    if rejects.empty:
        return pd.DataFrame(columns=["stage", "total"]), rejects
    from tasks.pipeline import STAGE_ORDER

    order = {s: i for i, s in enumerate(STAGE_ORDER)}
    counts = rejects.pivot_table(index="stage", columns="reason", values="item_id", aggfunc="count", fill_value=0)
    counts = counts.loc[sorted(counts.index, key=lambda s: order.get(s, len(order)))]
    counts["total"] = counts.sum(axis=1)
    counts = counts.reset_index()
    counts.columns.name = None
    sample = (rejects.sort_values(["stage", "reason", "item_id"], key=lambda c: c.map(order) if c.name == "stage" else c)
              .groupby(["stage", "reason"], sort=False).head(per_reason))
    return counts, sample[["stage", "reason", "item_id", "detail", "source", "path"]].reset_index(drop=True)


# --- decision gallery -------------------------------------------------------------------------
@dataclass
class Decision:
    pair_id: str
    outcome: str                 # "distilled" or a reject reason
    detail: str
    rain_type: str
    candidate: str | None        # absolute path of the rainy image
    reference: str | None        # absolute path of the retrieved real-rain gallery image
    ref_id: str
    scores: dict[str, float | None]
    votes: list[tuple[str, str, float | None]] = field(default_factory=list)  # (judge, yes/no/abstain, p_real)


def _spread(ids: list[str], n: int) -> list[str]:
    """`n` ids spread evenly over the sorted list (deterministic: the same run shows the same pairs)."""
    ids = sorted(ids)
    if len(ids) <= n:
        return ids
    step = len(ids) / n
    return [ids[int(i * step)] for i in range(n)]


def _panel_labels(run: RunLayout) -> tuple[list[str], dict[str, str]]:
    """(the judges' labels in panel order, the cascade's order; {model id: label}) from the first votes
    shard's metadata; ([], {}) when there is none."""
    import pyarrow.parquet as pq

    from tasks.vote.stage import META_KEY, VoteMeta, short_name

    shards = shard_files(run.manifest("votes"))
    raw = (pq.read_schema(shards[0]).metadata or {}).get(META_KEY) if shards else None
    if raw is None:
        return [], {}
    meta = VoteMeta.from_json(raw)
    labels = list(getattr(meta, "labels", None) or [short_name(m) for m in meta.panel])
    return labels, dict(zip(meta.panel, labels))


def _vote_word(vote) -> str:
    if vote is None or (isinstance(vote, float) and vote != vote) or pd.isna(vote):
        return "abstain"
    return "yes" if bool(vote) else "no"


def decision_gallery(run: RunLayout, per_outcome: int = 8) -> list[Decision]:
    """Up to `per_outcome` distilled pairs and `per_outcome` rejected ones (rejected by the cut: they
    had a reference), each with its candidate, reference, retrieval scores and every judge's vote."""
    if not shard_files(run.manifest("retrieval")):
        return []
    retrieval = read_manifest(run.manifest("retrieval"), "retrieval", columns=["pair_id", "ref_id", *SCORE_COLUMNS])
    retrieval = retrieval.drop_duplicates("pair_id").set_index("pair_id")
    distilled = (read_manifest(run.manifest("distilled"), "distilled", columns=["pair_id"])["pair_id"].tolist()
                 if shard_files(run.manifest("distilled")) else [])
    rejects = read_rejects(run)
    rejected = rejects[(rejects["stage"] == "select") & rejects["reason"].isin(DECIDED_REJECTS)
                       & rejects["item_id"].isin(retrieval.index)].drop_duplicates("item_id").set_index("item_id")
    picked = ([(p, "distilled", "") for p in _spread([p for p in distilled if p in retrieval.index], per_outcome)]
              + [(p, rejected.at[p, "reason"], rejected.at[p, "detail"]) for p in _spread(rejected.index.tolist(), per_outcome)])
    if not picked:
        return []
    ids = [p for p, _, _ in picked]
    candidates = read_manifest(run.manifest("candidates"), "candidates", columns=["pair_id", "source", "rain_type", "rainy_path"])
    candidates = run.absolute_paths(candidates[candidates["pair_id"].isin(ids)], ("rainy_path",), check=False)
    candidates = candidates.drop_duplicates("pair_id").set_index("pair_id")
    refs = set(retrieval.loc[ids, "ref_id"])
    gallery = read_manifest(run.manifest("gallery"), "gallery", columns=["image_id", "source", "path"])
    gallery = run.absolute_paths(gallery[gallery["image_id"].isin(refs)], ("path",), check=False)
    gallery = gallery.drop_duplicates("image_id").set_index("image_id")
    votes = (read_manifest(run.manifest("votes"), "votes", columns=["pair_id", "judge", "p_real", "vote"])
             if shard_files(run.manifest("votes")) else pd.DataFrame(columns=["pair_id", "judge", "p_real", "vote"]))
    votes = votes[votes["pair_id"].isin(ids)]
    panel, label_of = _panel_labels(run)
    votes = votes.assign(judge=votes["judge"].astype(str).map(lambda j: label_of.get(j, j)))  # model ids of older runs
    panel = panel or sorted(votes["judge"].unique())
    out = []
    for pair_id, outcome, detail in picked:
        ref_id = retrieval.at[pair_id, "ref_id"]
        cand = candidates.loc[pair_id] if pair_id in candidates.index else None
        mine = votes[votes["pair_id"] == pair_id].set_index("judge")
        out.append(Decision(
            pair_id=pair_id, outcome=outcome, detail=str(detail or ""), ref_id=str(ref_id),
            rain_type=str(cand["rain_type"]) if cand is not None else "?",
            candidate=str(cand["rainy_path"]) if cand is not None else None,
            reference=str(gallery.at[ref_id, "path"]) if ref_id in gallery.index else None,
            scores={c: (None if pd.isna(retrieval.at[pair_id, c]) else float(retrieval.at[pair_id, c])) for c in SCORE_COLUMNS},
            votes=[(j, _vote_word(mine.at[j, "vote"]), None if pd.isna(mine.at[j, "p_real"]) else float(mine.at[j, "p_real"]))
                   if j in mine.index else (j, "not asked", None) for j in panel]))
    return out


def _scores_text(d: Decision, sep: str) -> str:
    parts = []
    for level in RETRIEVAL_LEVELS:
        v = d.scores.get(level.score)
        parts.append(f"{level.score} {'-' if v is None else f'{v:.3f}'} ({'↓' if level.better == 'lower' else '↑'})")
    return sep.join(parts)


def _votes_text(d: Decision, sep: str) -> str:
    if not d.votes:
        return "no votes"
    return sep.join(f"{j}: {w}" + ("" if p is None else f" ({p:.2f})") for j, w, p in d.votes)


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def gallery_markdown(decisions: list[Decision], thumb: int = 112) -> str:
    """A markdown table, one decision per row: outcome | candidate | reference | scores | votes."""
    if not decisions:
        return "No retrieved pairs to show (the run has not reached the retrieve stage)."
    lines = ["| outcome | candidate | real reference | retrieval scores | judges (p_real) |", "|---|---|---|---|---|"]
    for d in decisions:
        cells = [f"**{d.outcome}**<br>{d.rain_type}"]  # no detail: the UI's cells do not wrap, votes say it
        for path, what in ((d.candidate, d.pair_id), (d.reference, d.ref_id)):
            uri = thumbnail_uri(path, thumb) if path else None
            cells.append(f"![{what}]({uri})<br>`{what[:12]}`" if uri else f"(image missing: `{path}`)")
        cells += [_scores_text(d, "<br>"), _votes_text(d, "<br>")]
        lines.append("| " + " | ".join(_md_cell(c) for c in cells) + " |")
    return "\n".join(lines)


def gallery_html(decisions: list[Decision], thumb: int = 160) -> str:
    """The same gallery as an HTML table (for the report file)."""
    if not decisions:
        return "<p>No retrieved pairs to show (the run has not reached the retrieve stage).</p>"
    esc = html.escape
    rows = ["<table class='gallery'><tr><th>outcome</th><th>candidate</th><th>real reference</th>"
            "<th>retrieval scores</th><th>judges (p_real)</th></tr>"]
    for d in decisions:
        cls = "kept" if d.outcome == "distilled" else "gone"
        cells = [f"<b class='{cls}'>{esc(d.outcome)}</b><br>{esc(d.rain_type)}" + (f"<br>{esc(d.detail)}" if d.detail else "")]
        for path, what in ((d.candidate, d.pair_id), (d.reference, d.ref_id)):
            uri = thumbnail_uri(path, thumb) if path else None
            cells.append(f"<img src='{uri}' alt='{esc(what)}'><br><code>{esc(what[:12])}</code>" if uri
                         else f"image missing: <code>{esc(str(path))}</code>")
        cells.append(esc(_scores_text(d, "\n")).replace("\n", "<br>"))
        cells.append(esc(_votes_text(d, "\n")).replace("\n", "<br>"))
        rows.append("<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    rows.append("</table>")
    return "\n".join(rows)
