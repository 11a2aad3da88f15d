"""The deployment files, read as Docker and Make read them; no Docker engine is needed (or started)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml  # PyYAML: a dev dependency (uvicorn[standard] brings it too)

ROOT = Path(__file__).resolve().parent.parent
APP = "kengele"  # the compose service that runs Kengele
# A version tag: `16.12-alpine`, `3.11.15-slim-bookworm`; never `latest` or a bare major.
PINNED = re.compile(r"^[\w.\-/]+:\d+\.\d+[\w.\-]*$")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text(encoding="utf-8"))
    return data


def example_settings() -> list[str]:
    """Every variable `.env.example` names, set or commented out."""
    text = (ROOT / ".env.example").read_text(encoding="utf-8")
    return re.findall(r"^#?\s*([A-Z][A-Z0-9_]*)=", text, flags=re.MULTILINE)


def dockerfile() -> str:
    return (ROOT / "Dockerfile").read_text(encoding="utf-8")


def test_every_setting_of_env_example_reaches_the_app_service() -> None:
    """`.env` is passed whole (optional); a value written in `environment` reads its own variable first."""
    service = compose()["services"][APP]
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


def test_images_are_pinned_to_a_version() -> None:
    images = [s["image"] for s in compose()["services"].values() if "image" in s]
    images += re.findall(r"^FROM\s+(\S+)", dockerfile(), flags=re.MULTILINE)
    assert images and all(PINNED.match(image) and ":latest" not in image for image in images), images
    assert "build" in compose()["services"][APP]


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
