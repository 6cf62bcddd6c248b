"""Hardening of the judges (issue 10): serve-judge binds beyond loopback only with a key (or
--insecure), placeholder keys are refused at start, a permanent HTTP 4xx is a recorded error, and
a corrupt answer cache is moved aside and rebuilt."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tasks.secret_values import check_secret, main as secrets_main, placeholder_reason

ROOT = Path(__file__).resolve().parents[1]
ENV_EXAMPLE = ROOT / "docker" / ".env.example"
SECRETS = ("POSTGRES_PASSWORD", "PREFECT_AUTH_STRING", "UNIRAIN_JUDGE_API_KEY")


def _env_example() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in ENV_EXAMPLE.read_text().splitlines() if line and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def _serve_judge(tmp_path, *args, env=None):
    env = {**os.environ, "DO_NOT_TRACK": "1", **(env or {})}
    # `from flows.cli import main` as a script: `python -m flows.cli` would make two UserError classes
    cmd = [sys.executable, "-c", "import sys; from flows.cli import main; sys.exit(main())", "serve-judge", "--model", str(tmp_path), "--port", "18999", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


# ---- item 3: serve-judge binds and placeholder keys ----------------------------------------------

def test_serve_judge_refuses_a_public_bind_without_a_key(tmp_path):
    res = _serve_judge(tmp_path, "--host", "0.0.0.0")
    assert res.returncode == 2, res.stderr
    assert "--host 0.0.0.0 serves every machine" in res.stderr and "--insecure" in res.stderr
    assert "Traceback" not in res.stderr


def test_serve_judge_refuses_a_placeholder_key(tmp_path):
    res = _serve_judge(tmp_path, "--host", "0.0.0.0", "--api-key-env", "JUDGE_KEY_T", env={"JUDGE_KEY_T": "change-me"})
    assert res.returncode == 2, res.stderr
    assert "--api-key-env JUDGE_KEY_T: the variable is a placeholder ('change-me')" in res.stderr
    assert "change-me" not in res.stdout
    res = _serve_judge(tmp_path, "--api-key-env", "JUDGE_KEY_T", env={"JUDGE_KEY_T": ""})
    assert res.returncode == 2 and "JUDGE_KEY_T: the variable is empty" in res.stderr


def test_bind_rule():
    from flows.commands.serve_judge import check_bind, is_loopback

    assert all(is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "::", "10.0.0.5", "judge.example.org"))
    check_bind("127.0.0.1", has_key=False, insecure=False)
    check_bind("0.0.0.0", has_key=True, insecure=False)
    check_bind("0.0.0.0", has_key=False, insecure=True)
    with pytest.raises(ValueError, match="no API key"):
        check_bind("192.168.1.4", has_key=False, insecure=False)


def test_env_example_placeholders_are_refused():
    example = _env_example()
    for name in SECRETS:
        assert placeholder_reason(example[name]), f"{name}={example[name]} would be accepted"
    for good in ("Zq3v-8fjK_1x0aPq", "admin:Zq3v-8fjK_1x0aPq", "my-secret-horse-battery"):
        assert placeholder_reason(good) is None
    for bad in ("", "  ", "admin:", "CHANGE_ME", "changeme", "<your key>", "your-api-key", "xxxx", "secret"):
        assert placeholder_reason(bad), bad
    with pytest.raises(ValueError, match="^K is a placeholder"):
        check_secret("change-me", "K")


def test_secrets_check_command(monkeypatch, capsys):
    """What compose's secrets-check service runs before every other service."""
    for name, value in _env_example().items():
        monkeypatch.setenv(name, value)
    assert secrets_main(list(SECRETS)) == 1
    err = capsys.readouterr().err
    assert all(f"secrets-check: {name} is a placeholder" in err for name in SECRETS), err
    for name in SECRETS:
        monkeypatch.setenv(name, "admin:Zq3v-8fjK_1x0aPq" if name == "PREFECT_AUTH_STRING" else "Zq3v-8fjK_1x0aPq")
    assert secrets_main(list(SECRETS)) == 0


def test_judge_client_refuses_a_placeholder_key(monkeypatch):
    from tasks.config import ModelRef
    from tasks.vote.judges import JudgeUnavailable, make_judge

    monkeypatch.setenv("JUDGE_KEY_T", "change-me")
    ref = ModelRef(backend="vllm", name="j", options={"base_url": "http://127.0.0.1:9/v1", "api_key_env": "JUDGE_KEY_T"})
    with pytest.raises(JudgeUnavailable, match="JUDGE_KEY_T is a placeholder"):
        make_judge(ref)


# ---- item 7 (cache part): a corrupt judge cache is moved aside and rebuilt ---------------------------

def _answers(n):
    from tasks.vote.judges import JudgeResult

    return [((f"r{i}", f"c{i}"), JudgeResult(p_real=i / n)) for i in range(n)]


@pytest.mark.parametrize("damage", ["not_a_database", "damaged_pages"])
def test_corrupt_judge_cache_is_moved_aside_and_rebuilt(tmp_path, caplog, damage):
    from tasks.vote.judge_cache import JudgeCache, cache_path

    with JudgeCache(tmp_path) as cache:
        cache.put_many("m", "v1", _answers(2000))
    path = cache_path(tmp_path)
    if damage == "not_a_database":
        bad = b"this is not an SQLite file\n" * 100
    else:  # a valid header, garbage in the pages after it
        data = bytearray(path.read_bytes())
        data[8192:16384] = b"\x5a" * 8192
        bad = bytes(data)
    path.write_bytes(bad)

    with caplog.at_level("WARNING", logger="tasks.vote.judge_cache"):
        with JudgeCache(tmp_path) as cache:
            assert cache.count() == 0  # a new, working cache
            assert cache.put_many("m", "v1", _answers(3)) == 3
            assert set(cache.get_many("m", "v1", [("r1", "c1")])) == {("r1", "c1")}
    [moved] = path.parent.glob("answers.sqlite.corrupt-*")
    assert moved.read_bytes() == bad  # kept for inspection, untouched
    assert "is damaged" in caplog.text and moved.name in caplog.text
    with JudgeCache(tmp_path) as cache:  # the rebuilt cache opens again without a warning or a move
        assert cache.count() == 3
    assert len(list(path.parent.glob("answers.sqlite.corrupt-*"))) == 1


def test_cache_damaged_mid_run_never_stops_the_vote(tmp_path, caplog):
    import sqlite3

    from tasks.vote.judge_cache import JudgeCache

    cache = JudgeCache(tmp_path)

    class Broken:
        in_transaction = False

        def execute(self, *args):
            raise sqlite3.DatabaseError("database disk image is malformed")

        def close(self):
            pass

    cache._db = Broken()
    with caplog.at_level("WARNING", logger="tasks.vote.judge_cache"):
        assert cache.get_many("m", "v1", [("r", "c")]) == {}
        assert cache.put_many("m", "v1", _answers(2)) == 0
    assert caplog.text.count("continues without it") == 1
    cache._db = Broken()
    Broken.execute = lambda self, *a: (_ for _ in ()).throw(sqlite3.OperationalError("database is locked"))
    with pytest.raises(sqlite3.OperationalError):  # not damage: still an error
        cache.get_many("m", "v1", [("r", "c")])
