"""Issue 13 item 4: the `unirain` command line as a user meets it, by subprocess: version, help,
typo suggestions, exit codes, and Ctrl-C (one line, exit 130, no Prefect crash report)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
UNIRAIN = [sys.executable, "-m", "flows.cli"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return {**env, "OMP_NUM_THREADS": "1", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
            "COLUMNS": "100", "PYTHONUNBUFFERED": "1"}


def _cli(*args, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([*UNIRAIN, *map(str, args)], cwd=cwd, env=_env(), capture_output=True, text=True,
                          timeout=120)


def test_version_and_help():
    from importlib.metadata import version

    res = _cli("--version")
    assert res.returncode == 0 and res.stdout.strip() == f"unirain {version('unirain')}"
    res = _cli("--help")
    assert res.returncode == 0
    for command in ("synth", "ingest", "inspect", "distill", "train", "evaluate", "derain", "report", "models"):
        assert command in res.stdout
    assert "130" in res.stdout  # the exit statuses are in the help


def test_bare_unirain_shows_help_as_a_usage_error():
    res = _cli()
    assert res.returncode == 2  # no command is a usage error (scripts notice); the help goes to stdout
    assert "Usage: unirain" in res.stdout and "distill" in res.stdout


def test_a_typo_suggests_the_command():
    res = _cli("distil", "--run", "x")
    assert res.returncode == 2
    assert "Did you mean 'distill'?" in res.stderr and "Traceback" not in res.stderr
    res = _cli("distill", "--confg", "c.yaml", "--run", "x")
    assert res.returncode == 2 and "--config" in res.stderr  # click suggests the option too


def test_every_option_has_help():
    from flows.cli import app_command

    def commands(group, prefix=""):
        for name, cmd in group.commands.items():
            if hasattr(cmd, "commands"):
                yield from commands(cmd, f"{prefix}{name} ")
            else:
                yield f"{prefix}{name}", cmd

    seen = 0
    for name, cmd in commands(app_command()):
        assert cmd.help, name
        for param in cmd.params:
            if param.name != "help":
                assert getattr(param, "help", None), f"unirain {name}: {param.name} has no help"
                seen += 1
    assert seen > 50


def test_a_config_error_is_one_line_with_exit_2(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("caption:\n  batch_size: 0\n")
    res = _cli("distill", "--config", bad, "--run", tmp_path / "run")
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("unirain distill: error:") and "caption.batch_size" in lines[0]
    assert not (tmp_path / "run").exists()


def test_inspect_takes_the_run_as_argument_or_option(tmp_path):
    from flows.cli import parse_args

    assert parse_args(["inspect", str(tmp_path)]).run == str(tmp_path)
    assert parse_args(["inspect", "--run", str(tmp_path), "--json"]).run == str(tmp_path)
    assert parse_args(["train", "--config", "c.yaml", "--run-dir", "r"]).run == "r"  # torchrun's spelling
    res = _cli("inspect", "--run", tmp_path / "a", tmp_path / "b")
    assert res.returncode == 2 and "differ" in res.stderr


def test_ctrl_c_stops_at_once_with_one_line_and_exit_130(tmp_path):
    """A long training inside its Prefect flow gets SIGINT on its process group, as a terminal sends
    Ctrl-C: exit 130 with one line (what finished, how to resume), no crash report, no server left."""
    import psutil

    from tasks.offline.synth import synthesize_paired

    synthesize_paired(tmp_path / "data", 2, size=(64, 64))
    (tmp_path / "model.yaml").write_text(yaml.safe_dump(
        {"type": "unirain", "dim": 8, "num_blocks": [1, 1], "heads": [1, 1], "num_refinement_blocks": 1,
         "expert_expansion": 1.0, "num_experts": 2, "top_k": 1}))
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"train": dict(
        model="model.yaml", iters=100000, batch_size=2, crop=32, warmup_iters=1, eval_every=100000,
        val_fraction=0.25, val_crop=32, num_workers=0, ckpt_every=2, device="cpu")}))
    run = tmp_path / "run"
    argv = ["train", "--config", str(tmp_path / "run.yaml"), "--run", str(run), "--manifest", str(tmp_path / "data")]
    # SIGINT as a terminal leaves it: a suite started in the background (`cmd &`) ignores SIGINT, and
    # a Python started with SIGINT ignored never raises KeyboardInterrupt.
    proc = subprocess.Popen([*UNIRAIN, *argv], cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 240
        while not (run / "checkpoints" / "latest.json").exists():  # the flow is running and has saved
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "training never saved a checkpoint"
            time.sleep(0.5)
        children = psutil.Process(proc.pid).children(recursive=True)  # Prefect's API server among them
        sent = time.monotonic()
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    print(f"exit {took:.1f} s after SIGINT")
    assert proc.returncode == 130, err
    assert took < 10  # 1-2 s measured; the issue asks for 5 s, this bound leaves room for a busy machine
    lines = [line for line in err.strip().splitlines() if "interrupted" in line]
    assert len(lines) == 1 and err.strip().endswith(lines[0]), err  # one line, and nothing after it
    assert lines[0].startswith("unirain train: interrupted (") and "checkpoint at iteration" in lines[0]
    assert f"rerun `unirain {' '.join(argv)}` to resume" in lines[0]
    for noise in ("Traceback", "Crash detected", "ConnectError"):
        assert noise not in out + err
    time.sleep(1)
    assert not [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]


def test_report_refuses_a_folder_that_is_no_run(tmp_path):
    res = _cli("report", tmp_path)
    assert res.returncode == 2 and "not a UniRain run folder" in res.stderr
    assert not list(tmp_path.iterdir())


def test_demo_out_elsewhere_gets_a_config_pointing_inside_it(tmp_path):
    """`flows.demo --out OTHER` ingests, captions and judges with OTHER's data and models, not demo_run's."""
    from flows.demo import CONFIG, demo_config
    from tasks.config import load_run_config

    out = tmp_path / "other"
    path = demo_config(CONFIG, out)
    assert path == out / "config.yaml"
    cfg, demo = load_run_config(path), load_run_config(CONFIG)
    assert cfg.sources == [f"unirain={out / 'data' / 'paired'}"] and cfg.gallery == [str(out / "data" / "gallery")]
    models = [cfg.models.captioner.name, cfg.models.embedder.name, *(j.name for j in cfg.models.judges)]
    assert all(str(out / "models") in name for name in models), models
    assert [j.options for j in cfg.models.judges] == [j.options for j in demo.models.judges]
    assert cfg.train == demo.train and cfg.vote == demo.vote  # everything else as configs/demo.yaml
    from unirain_model.config import load_train_config

    assert load_train_config(path) == load_train_config(CONFIG)  # the trainer reads the same recipe
    assert demo_config(CONFIG, ROOT / "demo_run") == CONFIG  # the default folder uses the config as is


def test_shell_completion_completes_commands_and_choices():
    env = {**_env(), "_UNIRAIN_COMPLETE": "complete_bash", "COMP_WORDS": "unirain dis", "COMP_CWORD": "1"}
    res = subprocess.run(UNIRAIN, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.split() == ["distill"]
    env.update(COMP_WORDS="unirain distill --until v", COMP_CWORD="3")
    res = subprocess.run(UNIRAIN, cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert res.stdout.split() == ["vote"]


def test_relocate_takes_the_run_either_way(tmp_path):
    from flows.cli import parse_args

    assert parse_args(["relocate", "--run", str(tmp_path)]).run == parse_args(["relocate", str(tmp_path)]).run
    res = _cli("relocate", "--run", tmp_path / "nope")
    assert res.returncode == 2 and "not a UniRain run folder" in res.stderr and not (tmp_path / "nope").exists()


def test_inspect_draws_rich_tables_for_a_terminal(capsys):
    import pandas as pd

    from flows.commands.inspect import print_tables

    print_tables("run: r", pd.DataFrame({"stage": ["ingest", "vote"], "kept": [64, 54]}))
    out = capsys.readouterr().out
    assert out.startswith("run: r") and "┃ stage" in out and "│ vote" in out and "54 │" in out  # numbers right-aligned
