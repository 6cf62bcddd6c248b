"""Refuse secrets that are not secret: blanks and the placeholders of docker/.env.example (`change-me`).

A copied `.env.example` whose `change-me` was never replaced starts a stack whose passwords and
judge key anyone can guess; compose's `${VAR:?}` only catches blanks. `check_secret` is used where
a key is read (`serve-judge`, the `vllm` judge client) and, as `python -m tasks.secret_values VAR...`,
by the compose stack's `secrets-check` service, which every other service waits for.
"""
from __future__ import annotations

import os
import re
import sys

# Phrases that mark a value as a placeholder wherever they appear (`admin:change-me`, `change-me-too`).
_PLACEHOLDER_PHRASE = re.compile(
    r"(?<![a-z0-9])(change[-_ .]?me|replace[-_ .]?me|fill[-_ .]?me([-_ .]?in)?|"
    r"your[-_ .]?(api[-_ .]?)?(key|password|secret|token))(?![a-z0-9])"
)
# Values that are placeholders when they are the whole secret (a passphrase may contain these words).
_PLACEHOLDER_VALUE = re.compile(
    r"changeit|placeholder|todo|tbd|x+|\.+|\*+|secret|password|passwd|api[-_ ]?key|key|token|example|dummy|"
    r"none|null|test|admin|<.*>"
)
HOW_TO = "python3 -c \"import secrets; print(secrets.token_urlsafe(24))\""


def placeholder_reason(value: str | None) -> str | None:
    """Why `value` is not a usable secret (empty, a placeholder), or None when it may be one.

    For a `user:password` string the password part is judged: `admin:change-me` is refused.
    """
    if value is None or not value.strip():
        return "is empty"
    text = value.strip()
    secret = text.split(":", 1)[1] if ":" in text else text
    if not secret.strip():
        return "has an empty password after ':'"
    low = secret.strip().lower()
    match = _PLACEHOLDER_PHRASE.search(low)
    if match:
        return f"is a placeholder ({match.group(0)!r})"
    if _PLACEHOLDER_VALUE.fullmatch(low):
        return f"is a placeholder ({low!r})"
    return None


def check_secret(value: str | None, source: str) -> str:
    """`value` when usable; else ValueError naming `source` (never the value beyond the placeholder)."""
    reason = placeholder_reason(value)
    if reason:
        raise ValueError(f"{source} {reason}: set a real secret, e.g. from {HOW_TO}")
    return value  # type: ignore[return-value]


def main(argv: list[str] | None = None) -> int:
    """Check the named environment variables; print one line per bad one; exit 1 if any."""
    names = sys.argv[1:] if argv is None else argv
    bad = []
    for name in names:
        try:
            check_secret(os.environ.get(name), name)
        except ValueError as exc:
            bad.append(str(exc))
    for line in bad:
        print(f"secrets-check: {line}", file=sys.stderr)
    if not bad:
        print(f"secrets-check: {', '.join(names)} set")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
