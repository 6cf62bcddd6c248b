"""How flow runs look in the Prefect UI: their names, and the `unirain` loggers' lines in their logs.

Names: `distill · r1`, `caption · r1`, `train · r1` (the stage and the run folder's name) instead of
Prefect's random `defiant-bittern`.

Logs: the package logs through `logging.getLogger("unirain.<part>")` (the trainer's validation lines,
checkpoint saves; `unirain_model.*` module loggers too). Prefect sends only its own loggers to the
API, so while a flow runs `routed_logs` puts a Prefect API handler on those loggers (at INFO): the
lines appear in the flow run's log in the UI, and still reach the console through the root handler.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import types
from pathlib import Path
from typing import Callable

LOGGERS = ("unirain", "unirain_model")


def _parameters() -> dict:
    from prefect.context import FlowRunContext

    ctx = FlowRunContext.get()
    return dict(ctx.parameters or {}) if ctx else {}


def folder_name(value) -> str:
    """The last part of a path parameter (`runs/r1/` -> `r1`), or '?' when there is none."""
    if not value:
        return "?"
    path = Path(str(value))
    return path.name or str(value)


def run_name(label: str, *fallbacks: str) -> Callable[[], str]:
    """A `flow_run_name` callable: `<label> · <run folder name>`; `label` may be `{stage}`-style
    (formatted from the parameters); when `run` is empty the first non-empty of `fallbacks` is named."""

    def name() -> str:
        params = _parameters()
        what = label.format(**params) if "{" in label else label
        target = params.get("run") or next((params.get(k) for k in fallbacks if params.get(k)), None)
        return f"{what} · {folder_name(target)}"

    name.__name__ = f"run_name_{label.strip('{}')}"
    return name


def _in_a_run(record: logging.LogRecord) -> bool:
    """Only records made inside a flow or task run (a helper thread without Prefect's context would
    make the handler warn on every line)."""
    from prefect.context import FlowRunContext, TaskRunContext

    return bool(getattr(record, "flow_run_id", None) or FlowRunContext.get() or TaskRunContext.get())


@contextlib.contextmanager
def routed_logs(level: int = logging.INFO):
    """While inside: records of the package's loggers at `level` and above also go to the current flow
    run's log (`unirain.*`; `unirain_model.*` too, the model package's own module loggers)."""
    from prefect.logging.handlers import APILogHandler

    undo = []
    for name in LOGGERS:
        logger = logging.getLogger(name)
        added = None
        if not any(isinstance(h, APILogHandler) for h in logger.handlers):  # PREFECT_LOGGING_EXTRA_LOGGERS did it
            added = APILogHandler()
            added.setLevel(level)
            added.addFilter(_in_a_run)
            logger.addHandler(added)
        undo.append((logger, added, logger.level))
        if logger.getEffectiveLevel() > level:
            logger.setLevel(level)
    try:
        yield
    finally:
        for logger, added, old_level in undo:
            if added is not None:  # records already handed over are sent by Prefect's log worker
                logger.removeHandler(added)
            logger.setLevel(old_level)


def with_routed_logs(fn):
    """Decorator (under `@flow`): the flow body runs inside `routed_logs()`.

    The wrapper takes the flow module's globals: Prefect resolves the parameters' string annotations
    (`from __future__ import annotations`) in the function's `__globals__`, so a wrapper living in
    this module would make it look for `StageName` here."""
    routed = routed_logs

    def wrapper(*args, **kwargs):
        with routed():
            return fn(*args, **kwargs)

    wrapper = types.FunctionType(wrapper.__code__, fn.__globals__, fn.__name__, wrapper.__defaults__,
                                 wrapper.__closure__)
    return functools.update_wrapper(wrapper, fn)
