"""The deployment files, read as Docker and Make read them; no Docker engine is needed (or started)."""

from __future__ import annotations

import argparse
import inspect
import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import uvicorn
import yaml  # PyYAML: a dev dependency (uvicorn[standard] brings it too)

from app import cli
from app.cli import build_parser
from app.config import Settings

ROOT = Path(__file__).resolve().parent.parent
APPS = ("migrate", "web", "worker")  # the compose services that run Kengele (one image)
PROXY = "proxy"
# A version tag: `16.12-alpine`, `3.11.15-slim-bookworm`; never `latest` or a bare major.
PINNED = re.compile(r"^[\w.\-/]+:\d+\.\d+[\w.\-]*$")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return data


def interpolated(value: str, env: dict[str, str] | None = None) -> str:
    """`value` as Compose reads it: `${NAME:-default}` (nested too) is NAME from `env`, else the default."""
    env = env or {}
    innermost = re.compile(r"\$\{(\w+)(?::?-([^${}]*))?\}")
    while innermost.search(value):
        value = innermost.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
    return value


def commands(service: dict[str, Any]) -> list[list[str]]:
    """The `kengele` command lines a service runs: `["kengele", ...]`, or each of `sh -c "a && b"`."""
    command = [interpolated(str(part)) for part in service["command"]]
    if command[:2] == ["sh", "-c"]:
        return [shlex.split(step) for step in command[2].split("&&")]
    return [command]


def parsed(service: str) -> list[argparse.Namespace]:
    """The service's commands as `kengele` parses them: a flag it does not know fails the test."""
    lines = commands(compose()["services"][service])
    assert lines and all(line[0] == "kengele" for line in lines), lines
    found = []
    for line in lines:
        try:
            found.append(build_parser().parse_args(line[1:]))
        except SystemExit:
            pytest.fail(f"{service}: `{shlex.join(line)}` is not a command kengele knows")
    return found


def setting_names() -> set[str]:
    """Every environment variable Settings reads: KENGELE_<FIELD>, and the aliases (TWILIO_*, AT_*)."""
    prefix = Settings.model_config.get("env_prefix", "")
    names = set()
    for name, field in Settings.model_fields.items():
        alias = field.validation_alias
        names |= set(getattr(alias, "choices", None) or [f"{prefix}{name}".upper()])
    return {str(n) for n in names}


def example_settings() -> list[str]:
    """Every variable `.env.example` names, set or commented out."""
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    return re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE)


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text(encoding="utf-8")


@pytest.mark.parametrize("app", APPS)
def test_every_setting_of_env_example_reaches_the_app_services(app: str) -> None:
    """`.env` is passed whole (optional); a value written in `environment` reads its own variable first."""
    service = compose()["services"][app]
    assert {"path": ".env", "required": False} in service["env_file"]
    environment = service.get("environment", {})
    assert isinstance(environment, dict), "environment as a mapping, so each value can be read"
    names = example_settings()
    assert {"KENGELE_ENV", "KENGELE_SECRET_KEY", "KENGELE_TIMEZONE", "TWILIO_AUTH_TOKEN"} <= set(names)
    for name in names:
        if name in environment:  # written here: .env (env_file) would be overridden unless it reads it
            assert str(environment[name]).startswith("${" + name + ":-"), f"{name}: {environment[name]!r}"
    for name, value in environment.items():
        assert re.fullmatch(r"\$\{" + name + r":-.*\}", str(value)), f"{name} must read ${{{name}}} first"
    assert set(environment) <= setting_names(), set(environment) - setting_names()
    # Its defaults make valid settings (production's secrets aside, which come from .env).
    values = {name: interpolated(str(value)) for name, value in environment.items()}
    assert values.pop("KENGELE_ENV") == "production"
    assert values["KENGELE_DATABASE_URL"] == "postgresql+psycopg://kengele:kengele@db:5432/kengele"
    fields: dict[str, Any] = {name.removeprefix("KENGELE_").lower(): value for name, value in values.items()}
    fields |= {"_env_file": None, "env": "test", "secret_key": "k" * 16 + "x" * 16}
    settings = Settings(**fields)
    assert (settings.db_pool_size, settings.db_max_overflow) == (5, 5)
    assert settings.forwarded_allow_ips == "10.0.0.0/8,172.16.0.0/12,192.168.0.0/16"


def test_images_are_pinned_to_a_version() -> None:
    images = [s["image"] for s in compose()["services"].values() if "image" in s]
    images += re.findall(r"^FROM\s+(\S+)", dockerfile(), flags=re.MULTILINE)
    assert images and all(PINNED.match(image) and ":latest" not in image for image in images), images
    assert all("build" in compose()["services"][app] for app in APPS)


def test_the_services_run_real_kengele_commands() -> None:
    """Each command line parses with the real parser: a renamed flag or subcommand fails here."""
    upgrade, places = parsed("migrate")
    assert (upgrade.command, upgrade.db_command) == ("db", "upgrade")
    assert (places.command, places.builtin, places.if_empty) == ("gazetteer", True, True)
    (web,) = parsed("web")
    assert web.command == "serve" and (web.no_scheduler, web.no_dispatcher, web.no_processor) == (
        True,
        True,
        False,
    )
    assert (web.host, web.port, web.workers) == ("0.0.0.0", 8000, 2)
    (worker,) = parsed("worker")
    assert worker.command == "worker"


def test_migrate_runs_once_before_the_replicas_and_the_worker() -> None:
    services = compose()["services"]
    assert services["migrate"]["depends_on"] == {"db": {"condition": "service_healthy"}}
    assert services["migrate"]["restart"] == "no"  # one-shot: it exits 0 and stays exited
    for app in ("web", "worker"):
        assert services[app]["depends_on"]["migrate"] == {"condition": "service_completed_successfully"}
        assert services[app]["depends_on"]["db"] == {"condition": "service_healthy"}
    assert services[PROXY]["depends_on"] == {"web": {"condition": "service_healthy"}}


def test_only_the_proxy_publishes_a_port_and_web_can_scale() -> None:
    services = compose()["services"]
    assert [name for name, s in services.items() if s.get("ports")] == [PROXY]
    assert {interpolated(p).rsplit(":", 1)[1] for p in services[PROXY]["ports"]} == {"80", "443"}
    for app in APPS:  # `--scale web=3` needs a name and host port of its own for no replica
        assert "container_name" not in services[app] and "ports" not in services[app], app
    web = services["web"]
    assert "/readyz" in " ".join(web["healthcheck"]["test"])
    # The image's own check asks /readyz, which a process without HTTP never answers.
    assert "HEALTHCHECK" in dockerfile()
    assert all(services[app]["healthcheck"] == {"disable": True} for app in ("migrate", "worker"))


@pytest.mark.parametrize("site", ["http", "https"])
def test_every_file_the_proxy_mounts_exists(site: str) -> None:
    mounts = compose()["services"][PROXY]["volumes"]
    targets = {}
    for mount in mounts:
        source, target, mode = interpolated(mount, {"PROXY_SITE": site}).split(":")
        assert mode == "ro" and source.startswith("./"), mount
        assert (ROOT / source).exists(), f"{mount}: {source} is not in the repository"
        targets[target] = ROOT / source
    assert targets["/etc/nginx/site.conf"].name == f"{site}.conf"
    assert (
        targets["/etc/nginx/kengele"].is_dir()
        and (targets["/etc/nginx/kengele"] / "locations.conf").is_file()
    )
    # Its paths are the ones the files name: the main file's includes, the site's certificates.
    main = targets["/etc/nginx/nginx.conf"].read_text(encoding="utf-8")
    assert {"kengele/proxy.conf", "kengele/upstream.conf", "site.conf"} <= set(
        re.findall(r"include (\S+);", main)
    )
    certs = re.findall(r"ssl_certificate(?:_key)? (\S+);", targets["/etc/nginx/site.conf"].read_text())
    assert all(path.startswith("/etc/nginx/certs/") for path in certs) and len(certs) == (
        2 if site == "https" else 0
    )


def nginx_directive(name: str, text: str) -> list[str]:
    return re.findall(rf"^\s*{name}\s+([^;]+);", text, flags=re.MULTILINE)


def test_the_proxy_finds_every_replica_and_answers_providers_in_time() -> None:
    nginx = ROOT / "deploy" / "nginx"
    upstream = (nginx / "upstream.conf").read_text(encoding="utf-8")
    (web,) = parsed("web")
    # Docker's DNS, asked again as replicas come and go: `resolve` needs a zone and nginx 1.27.3.
    assert nginx_directive("server", upstream) == [f"web:{web.port} resolve max_fails=1 fail_timeout=5s"]
    assert nginx_directive("resolver", upstream)[0].startswith("127.0.0.11 ")
    assert nginx_directive("zone", upstream)
    version = re.match(r"nginx:(\d+)\.(\d+)\.(\d+)", compose()["services"][PROXY]["image"])
    assert version and tuple(map(int, version.groups())) >= (1, 27, 3)
    # nginx drops an idle connection to a replica before uvicorn does (a POST sent on a connection
    # uvicorn is closing fails, and is not retried).
    assert "timeout_keep_alive" not in inspect.getsource(cli.cmd_serve)
    uvicorn_idle = inspect.signature(uvicorn.Config).parameters["timeout_keep_alive"].default
    assert int(nginx_directive("keepalive_timeout", upstream)[0].removesuffix("s")) < uvicorn_idle
    # Connect and read of a webhook under Twilio's 15 s.
    locations = (nginx / "locations.conf").read_text(encoding="utf-8")
    webhooks = re.search(r"location /webhooks/ \{(.*?)\}", locations, flags=re.DOTALL)
    assert webhooks
    connect = nginx_directive("proxy_connect_timeout", (nginx / "proxy.conf").read_text(encoding="utf-8"))
    read = nginx_directive("proxy_read_timeout", webhooks.group(1))
    assert int(connect[0].removesuffix("s")) + int(read[0].removesuffix("s")) < 15
    assert nginx_directive("client_max_body_size", webhooks.group(1)) == ["64k"]


@pytest.mark.parametrize("site", ["http", "https"])
def test_nginx_accepts_the_proxy_files(site: str, tmp_path: Path) -> None:
    """`nginx -t` by Debian's nginx, with loopback replicas in place of Docker's DNS (tests/proxy.py)."""
    from tests import proxy

    if not os.access(proxy.NGINX, os.X_OK):
        if os.environ.get("KENGELE_TEST_REQUIRE_PROXY") == "1":
            pytest.fail(f"nginx is required here but {proxy.NGINX} is missing")
        pytest.skip(f"{proxy.NGINX} missing (apt-get install nginx)")
    cert, key = proxy.self_signed(tmp_path)
    rendered = proxy.render(tmp_path, servers=["127.0.0.1:9", "127.0.0.1:10"], site=site, cert=cert, key=key)
    result = proxy.check(rendered)
    assert result.returncode == 0, result.stderr


def test_the_image_has_time_zones_and_starts_as_make_run_does() -> None:
    text = dockerfile()
    assert re.search(r"apt-get install[^\n]*\btzdata\b", text), "check-in schedules need the zone files"
    cmd = re.search(r"^CMD (.+)$", text, flags=re.MULTILINE)
    assert cmd
    steps = cmd.group(1)
    order = [
        "kengele db upgrade",
        "kengele gazetteer import --builtin --if-empty",
        "kengele demo load --if-empty",
    ]
    assert all(step in steps for step in order) and steps.index("exec kengele serve") > steps.index(order[-1])
    # In production the demo command itself declines (a note, exit 0): the image starts the same way.
    assert "production" not in steps
    assert "COPY pyproject.toml README.md LICENSE ./" in text  # license-files: the build needs LICENSE


def test_make_run_migrates_loads_places_and_the_demo_then_serves() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    recipe = re.search(r"^run: \$\(STAMP\)\n((?:\t.*\n)+)", makefile, flags=re.MULTILINE)
    assert recipe
    steps = [line.strip() for line in recipe.group(1).splitlines()]
    assert steps == [
        "$(BIN)/kengele db upgrade",
        "$(BIN)/kengele gazetteer import --builtin --if-empty",
        "$(BIN)/kengele demo load --if-empty",
        "$(BIN)/kengele serve --host 127.0.0.1 --port 8000",
    ]


@pytest.mark.parametrize(
    "pattern", [".git", ".venv", ".env", "*.db", "*.db-wal", "kengele.key", "**/__pycache__", ".pytest_cache"]
)
def test_the_build_context_leaves_out_data_secrets_and_caches(pattern: str) -> None:
    lines = (ROOT / ".dockerignore").read_text(encoding="utf-8").splitlines()
    assert pattern in lines


def test_every_package_the_service_imports_is_a_runtime_dependency() -> None:
    """`pip install .` (no dev extras, as the Dockerfile and a deployment install it) must serve:
    every third-party module app/, gateways/ and keywords/ import comes from a distribution of
    [project.dependencies] (or of the postgres extra, imported only for PostgreSQL), or from one
    that such a distribution requires (starlette by fastapi, requests by twilio)."""
    import ast
    import sys
    import tomllib
    from importlib.metadata import packages_distributions, requires

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    declared = project["dependencies"] + project["optional-dependencies"]["postgres"]

    def name(requirement: str) -> str:
        return re.split(r"[\[<>=!~ ;]", requirement, maxsplit=1)[0].lower().replace("_", "-")

    allowed = {name(d) for d in declared}
    allowed |= {name(r) for d in list(allowed) for r in requires(d) or () if "extra ==" not in r}
    ours = {"app", "gateways", "keywords", "migrations"}
    modules: dict[str, str] = {}
    for package in ours:
        for path in (ROOT / package).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                else:
                    continue
                for name in names:
                    top = name.split(".")[0]
                    if top not in ours and top not in sys.stdlib_module_names:
                        modules.setdefault(top, str(path.relative_to(ROOT)))
    distributions = packages_distributions()
    missing = {
        module: where
        for module, where in modules.items()
        if not {d.lower().replace("_", "-") for d in distributions.get(module, [module])} & allowed
    }
    assert not missing, f"imported but not a runtime dependency in pyproject.toml: {missing}"


def section(text: str, title: str) -> str:
    """The body of the markdown section `title` (to the next heading of its level or above)."""
    level = re.match(r"#+", title)
    assert level, title
    start = text.index(title + "\n") + len(title) + 1
    after = re.search(rf"^#{{1,{len(level.group(0))}}} ", text[start:], flags=re.MULTILINE)
    return text[start : start + after.start()] if after else text[start:]


def test_the_readme_deployment_commands_are_real() -> None:
    """Every `kengele ...` line of the README's Deployment section parses, and it names the shape."""
    text = section((ROOT / "README.md").read_text(encoding="utf-8"), "## Deployment")
    lines = [line.split("#")[0].strip() for line in re.findall(r"^kengele .*$", text, flags=re.MULTILINE)]
    assert len(lines) >= 3
    for line in lines:
        try:
            build_parser().parse_args(shlex.split(line)[1:])
        except SystemExit:
            pytest.fail(f"README Deployment: `{line}` is not a command kengele knows")
    assert "docker compose up -d --scale web=3" in text and "(docs/scaling.md)" in text


def test_scaling_md_tells_the_commands_and_leases_the_code_has() -> None:
    text = (ROOT / "docs" / "scaling.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `(\w+)` \| `([^`]+)` \|", section(text, "## What each process does"), re.M))
    services = compose()["services"]
    for app in APPS:
        assert rows[app] == " && ".join(shlex.join(line) for line in commands(services[app])), app
    defaults = Settings.model_fields
    leases = section(text, "## Replacing a worker")
    for name in ("send_lease", "webhook_lease", "processing_lease"):
        assert f"`KENGELE_{name.upper()}`, {defaults[name].default:g} s" in leases, name
    # The README's links into it land on headings it has.
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    anchors = {
        re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", text, re.M)
    }
    linked = set(re.findall(r"docs/scaling\.md#([\w\-]+)", readme))
    assert linked and linked <= anchors, linked - anchors
