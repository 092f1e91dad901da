"""The repository's operator-facing files stay true to the code."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from gateway.settings import load_settings

ROOT = Path(__file__).resolve().parents[1]


def test_compose_file_is_valid_and_its_settings_load() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert set(compose["services"]) == {"gateway", "minio", "postgres"}
    env = {
        key: re.sub(r"\$\{[A-Z_]+:-([^}]*)\}", r"\1", str(value))
        for key, value in compose["services"]["gateway"]["environment"].items()
    }
    settings = load_settings(environ=env)  # every variable is a real, well-typed option
    assert settings.storage.backend == "s3" and settings.s3.endpoint == "minio:9000"
    assert settings.index_url.startswith("postgresql+psycopg://pacs:") and settings.index_url.endswith("@postgres/pacs")
    if shutil.which("docker") and subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        subprocess.run(["docker", "compose", "config", "-q"], cwd=ROOT, check=True)


def test_ci_runs_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "./scripts/test" in readme and "./scripts/run" in readme
    assert "./scripts/test" in (ROOT / ".ci" / "run").read_text()


@pytest.mark.parametrize("script", ["scripts/test", "scripts/run", ".ci/run"])
def test_scripts_are_executable(script: str) -> None:
    assert (ROOT / script).stat().st_mode & 0o111
