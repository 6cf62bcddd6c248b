"""Kept for imports of earlier releases: the run config lives in `tasks.config`."""
from tasks.config import ConfigError, RunConfig, load_run_config, resolve_config_paths

__all__ = ["ConfigError", "RunConfig", "load_run_config", "resolve_config_paths"]
