"""Reports of a cut: funnel (Parquet + markdown), vote tallies and agreement per judge, score histograms.

Written to RUN/reports/ by the select stage: `funnel.parquet`, `funnel.md`, `votes.md`,
`p_real.png` (per judge, with the thresholds) and `retrieval_scores.png` (text_l2, image_cos, ssim,
with the optional minimums), so a threshold can be chosen by eye.

Agreement under the cascade: the first two judges answer every pair, so their agreement is an
unbiased estimate; the third answers only the pairs the first two left open, so its agreement with
them (and Fleiss' kappa over pairs where all three voted) describes those contested pairs only.
"""
from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pandas as pd

from data_manifests import RunLayout, read_manifest
from data_manifests.levels import RETRIEVAL_LEVELS, SCORE_COLUMNS
from tasks.config import SelectConfig
from tasks.funnel import format_table, funnel_table
from tasks.vote.stage import ABSTAIN, NO, RETRY, YES

TALLY_COLUMNS = ["judge", "asked", "yes", "no", "abstain_final", "abstain_retry", "mean_p_real"]
# one row per pair of judges: `judge` and `other` are two short names of the panel (`votes.judge`)
AGREEMENT_COLUMNS = ["judge", "other", "both_voted", "agree_pct", "cohen_kappa"]


def labels(panel) -> dict[str, str]:
    """The label of each judge in tables: `Votes.panel` already holds the short names `votes.judge` has."""
    return {m: m for m in panel}


def judge_tallies(votes: pd.DataFrame, panel, codes_of_rows: np.ndarray) -> pd.DataFrame:
    """Per judge: questions answered, yes/no at the threshold behind `codes_of_rows`, abstentions, mean p_real."""
    names = labels(panel)
    rows = []
    for judge in panel:
        mine = (votes["judge"] == judge).to_numpy()
        c = codes_of_rows[mine]
        p = votes.loc[mine, "p_real"].astype(float)
        rows.append({"judge": names[judge], "asked": int(mine.sum()), "yes": int((c == YES).sum()),
                     "no": int((c == NO).sum()), "abstain_final": int((c == ABSTAIN).sum()),
                     "abstain_retry": int((c == RETRY).sum()),
                     "mean_p_real": round(float(p.mean()), 4) if p.notna().any() else None})
    return pd.DataFrame(rows, columns=TALLY_COLUMNS)


def cohen_kappa(a: np.ndarray, b: np.ndarray) -> float | None:
    """Cohen's kappa of two yes/no raters over the same items (None when undefined)."""
    if not len(a):
        return None
    po = float((a == b).mean())
    pa, pb = float(a.mean()), float(b.mean())
    pe = pa * pb + (1 - pa) * (1 - pb)
    return None if pe >= 1.0 else (po - pe) / (1 - pe)


def agreement(codes: np.ndarray, panel) -> pd.DataFrame:
    """Pairwise agreement of judges over the pairs both voted on validly. `codes`: (pairs, judges)."""
    names = labels(panel)
    rows = []
    for i, j in itertools.combinations(range(len(panel)), 2):
        both = np.isin(codes[:, i], (YES, NO)) & np.isin(codes[:, j], (YES, NO))
        a, b = codes[both, i] == YES, codes[both, j] == YES
        kappa = cohen_kappa(a, b)
        rows.append({"judge": names[panel[i]], "other": names[panel[j]], "both_voted": int(both.sum()),
                     "agree_pct": round(100.0 * float((a == b).mean()), 1) if both.any() else None,
                     "cohen_kappa": None if kappa is None else round(kappa, 3)})
    return pd.DataFrame(rows, columns=AGREEMENT_COLUMNS)


def agreement_matrix(pairs: pd.DataFrame, panel) -> pd.DataFrame:
    """`agreement` as a square table whose rows and columns are the same judges in panel order: each
    cell "agree % (kappa, pairs)", the diagonal "-"."""
    names = [labels(panel)[m] for m in panel]
    cells = {(a, a): "-" for a in names}
    for r in pairs.itertuples(index=False):
        pct = "n/a" if r.agree_pct is None or pd.isna(r.agree_pct) else f"{r.agree_pct:g}%"
        kappa = "n/a" if r.cohen_kappa is None or pd.isna(r.cohen_kappa) else f"{round(r.cohen_kappa, 2) + 0.0:.2f}"  # no -0.00
        cells[(r.judge, r.other)] = cells[(r.other, r.judge)] = f"{pct} (κ {kappa}, n={r.both_voted})"
    return pd.DataFrame([{"judge": a, **{b: cells.get((a, b), "") for b in names}} for a in names],
                        columns=["judge", *names])


def fleiss_kappa(codes: np.ndarray) -> tuple[int, float | None]:
    """Fleiss' kappa (yes/no) over the pairs every judge voted on validly; (pairs used, kappa)."""
    full = np.isin(codes, (YES, NO)).all(1) if codes.size else np.zeros(0, dtype=bool)
    n_items, n = int(full.sum()), codes.shape[1] if codes.ndim == 2 else 0
    if n_items == 0 or n < 2:
        return n_items, None
    yes = (codes[full] == YES).sum(1).astype(float)
    counts = np.stack([yes, n - yes], 1)
    p_i = ((counts ** 2).sum(1) - n) / (n * (n - 1))
    p_j = counts.sum(0) / (n_items * n)
    pe = float((p_j ** 2).sum())
    return n_items, None if pe >= 1.0 else (float(p_i.mean()) - pe) / (1 - pe)


def votes_markdown(tallies: pd.DataFrame, pairs: pd.DataFrame, fleiss: tuple[int, float | None], threshold: float,
                   vote_thresholds, cascade: bool, counts: dict, panel=None, enabled: bool = True,
                   reference: bool = True) -> str:
    n, kappa = fleiss
    if not enabled:
        return "\n".join(["# Votes", "", "Voting was off (`vote.enabled: false`, the paper's \"no generation stage\" "
                          "ablation): no judge was asked, and every pair that passed retrieval and the `select:` "
                          "limits is distilled.", "", "## Outcome of the cut", "",
                          format_table(pd.DataFrame([counts])), ""])
    panel = list(panel) if panel is not None else list(dict.fromkeys([*pairs["judge"], *pairs["other"]]))
    lines = [
        "# Votes", "",
        *([] if reference else ["The judges saw each candidate alone (`vote.reference: false`, the paper's \"VLM only "
                                "(no RAG)\" ablation): no retrieved reference, a question without one.", ""]),
        f"Cut at threshold **{threshold:g}** (vote = p_real >= threshold); the vote stage ran at "
        f"{', '.join(f'{t:g}' for t in vote_thresholds) or '(none)'} with the cascade {'on' if cascade else 'off'}.", "",
        "## Per judge", "", format_table(tallies), "",
        "## Agreement between judges (pairs both voted on)", "",
        "Each cell: how often the row's and the column's judge gave the same vote, Cohen's kappa, and the pairs "
        "both voted on.", "", format_table(agreement_matrix(pairs, panel)), "",
        f"Fleiss' kappa over the {n} pairs every judge voted on: {'n/a' if kappa is None else f'{kappa:.3f}'}.", "",
    ]
    if cascade:
        lines += ["With the cascade the third judge only sees pairs the first two left open, so its agreement "
                  "figures (and Fleiss' kappa) describe contested pairs; the first two judges' agreement is unbiased. "
                  "Put the two judges that agree most first: fewer calls per pair.", ""]
    lines += ["## Outcome of the cut", "", format_table(pd.DataFrame([counts])), ""]
    if counts.get("needs_skipped_judge"):
        lines += [f"**{counts['needs_skipped_judge']} pairs** need a judge the cascade skipped at the vote "
                  f"stage's threshold: they are `undecided` here. Rerun the vote stage with `vote.threshold: "
                  f"{threshold:g}` (cached answers are reused; only those judges are called).", ""]
    return "\n".join(lines)


def plot_scores(reports: Path, votes: pd.DataFrame, panel, retrieval: pd.DataFrame, threshold: float,
                vote_thresholds, cfg: SelectConfig) -> list[Path]:
    """Histograms of p_real per judge and of the retrieval scores, with the cut's limits drawn."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: no global backend state, safe in worker threads

    reports.mkdir(parents=True, exist_ok=True)
    names = labels(panel)
    fig = Figure(figsize=(6.5, 4))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    bins = np.linspace(0, 1, 21)
    for judge in panel:
        p = votes.loc[votes["judge"] == judge, "p_real"].astype(float).dropna()
        ax.hist(p, bins=bins, histtype="step", linewidth=1.5, label=f"{names[judge]} (n={len(p)})")
    ax.axvline(threshold, color="k", linestyle="--", label=f"threshold {threshold:g}")
    for t in vote_thresholds:
        if t != threshold:
            ax.axvline(t, color="gray", linestyle=":", label=f"vote stage {t:g}")
    ax.set(xlabel="p_real = P(yes) / (P(yes) + P(no))", ylabel="pairs", title="Judge scores")
    ax.legend(fontsize=8)
    fig.tight_layout()
    p_real = reports / "p_real.png"
    fig.savefig(p_real, dpi=100)

    fig = Figure(figsize=(11, 3.4))
    FigureCanvasAgg(fig)
    limits = {level.score: getattr(cfg, level.limit_key) for level in RETRIEVAL_LEVELS}
    for k, (column, limit) in enumerate(limits.items(), 1):
        ax = fig.add_subplot(1, len(limits), k)
        values = retrieval[column].astype(float).dropna()
        ax.hist(values, bins=30, color="tab:blue", alpha=0.8)
        if limit is not None:
            ax.axvline(limit, color="k", linestyle="--", label=f"limit {limit:g}")
            ax.legend(fontsize=8)
        ax.set(xlabel=column, ylabel="pairs" if k == 1 else None, title=f"{column} (n={len(values)})")
    fig.tight_layout()
    scores = reports / "retrieval_scores.png"
    fig.savefig(scores, dpi=100)
    return [p_real, scores]


def write_funnel(run: RunLayout) -> pd.DataFrame:
    frame = funnel_table(run)
    run.reports.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(run.reports / "funnel.parquet", index=False)
    (run.reports / "funnel.md").write_text(f"# Funnel\n\nRun folder: `{run.root}`\n\n{format_table(frame)}\n")
    return frame


def retrieval_scores(run: RunLayout) -> pd.DataFrame:
    return read_manifest(run.manifest("retrieval"), "retrieval", columns=["pair_id", *SCORE_COLUMNS])


def vote_summary(votes, threshold: float) -> tuple[pd.DataFrame, pd.DataFrame, tuple[int, float | None]]:
    """Tallies per judge, pairwise agreement and Fleiss' kappa of a `tasks.select.stage.Votes` at `threshold`."""
    from tasks.select.stage import code_matrix, outcome_codes

    rows = votes.rows
    codes = code_matrix(rows, votes.panel, threshold, rows["pair_id"].unique())
    return judge_tallies(rows, votes.panel, outcome_codes(rows, threshold)), agreement(codes, votes.panel), fleiss_kappa(codes)


def write_select_reports(run: RunLayout, sel, votes, cfg: SelectConfig | None = None) -> dict:
    """Every report of a cut (`sel`: a `tasks.select.stage.Selection`) under RUN/reports/."""
    cfg = cfg or SelectConfig()
    funnel = write_funnel(run)
    tallies, pairs, fleiss = vote_summary(votes, sel.threshold)
    (run.reports / "votes.md").write_text(
        votes_markdown(tallies, pairs, fleiss, sel.threshold, votes.thresholds, votes.cascade, sel.counts,
                       votes.panel, votes.enabled, votes.reference))
    pngs = plot_scores(run.reports, votes.rows, votes.panel, retrieval_scores(run), sel.threshold, votes.thresholds, cfg)
    files = [run.reports / "funnel.parquet", run.reports / "funnel.md", run.reports / "votes.md", *pngs]
    return {"funnel": funnel, "tallies": tallies, "agreement": pairs, "fleiss": fleiss, "files": files}
