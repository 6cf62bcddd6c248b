"""The one line a `unirain` command prints when Ctrl-C stops it: what finished, how to resume.

Read from the run folder itself (stage state files, the latest checkpoint), never from Prefect:
after an interrupt its API may already be gone. Everything a command writes is renamed into place,
so rerunning the same command resumes where the finished work ends.
"""
from __future__ import annotations

import json
import shlex
from pathlib import Path


def finished_work(run: str | Path | None) -> str:
    """`ingest, caption done; checkpoint at iteration 40` (or '' when nothing is recorded)."""
    if not run:
        return ""
    root = Path(run)
    parts = []
    if (root / "run.json").is_file():
        try:
            from data_manifests import RunLayout
            from tasks.stage import stage_status

            done = [s["stage"] for s in stage_status(RunLayout.at(root)) if s["status"] == "done"]
            parts.append(f"stages done: {', '.join(done)}" if done else "no stage finished")
        except Exception:  # noqa: BLE001 - a half-written run must not hide the interrupt line
            pass
    try:
        latest = json.loads((root / "checkpoints" / "latest.json").read_text())
        parts.append(f"checkpoint at iteration {int(latest['iteration'])}")
    except (OSError, ValueError, KeyError, TypeError):
        pass
    return "; ".join(parts)


def interrupted_line(args, argv: list[str]) -> str:
    from .run_guard import written_run

    run = written_run(args) or getattr(args, "run", None)
    done = finished_work(run)
    again = "unirain " + " ".join(shlex.quote(a) for a in argv)
    return (f"unirain {args.command}: interrupted" + (f" ({done})" if done else "")
            + f"; rerun `{again}` to resume")
