"""Static checks that README, .ci/run, requirements and the Dockerfile tell the same story."""
from __future__ import annotations

import re
import tomllib
from pathlib import Path

from streamlit import config
from streamlit.elements.exception import _error_detail_visibility

REPO = Path(__file__).resolve().parents[1]


def _bash_blocks(text: str) -> list[str]:
    return [block.strip() for block in re.findall(r"```bash\n(.*?)```", text, re.S)]


def _setup_commands() -> tuple[str, str]:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Set up on a fresh machine", 1)[1].split("\n## ", 1)[0]
    blocks = _bash_blocks(section)
    assert len(blocks) == 2, "README must give exactly two set-up commands"
    return blocks[0], blocks[1]


def test_ci_runs_the_readme_test_command_verbatim():
    _, test_command = _setup_commands()
    ci = (REPO / ".ci" / "run").read_text().splitlines()
    assert test_command in ci
    assert "pytest" in test_command and "requirements-dev.txt" in test_command


def test_dockerfile_mirrors_the_readme_install_and_start():
    start_command, _ = _setup_commands()
    install, start = [part.strip() for part in start_command.split("&&")]
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11", dockerfile, re.M)
    assert f"RUN {install}" in dockerfile.splitlines()
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.M).group(1)
    cmd_words = [w.strip().strip('"') for w in cmd.strip("[]").split(",")]
    assert " ".join(cmd_words).startswith(start)
    assert "COPY requirements.txt" in dockerfile and "COPY . ." in dockerfile


def test_requirements_are_pinned_and_dev_includes_runtime():
    runtime = [line for line in (REPO / "requirements.txt").read_text().splitlines()
               if line and not line.startswith("#")]
    assert all("==" in line for line in runtime)
    assert "torch==2.14.1" in runtime and "torchvision==0.29.1" in runtime
    for name in ("streamlit", "plotly", "pandas", "diskcache"):
        assert any(line.startswith(name + "==") for line in runtime)
    dev = (REPO / "requirements-dev.txt").read_text().splitlines()
    assert "-r requirements-cluster.txt" in dev and any(line.startswith("playwright==") for line in dev)


def test_every_third_party_import_is_in_requirements():
    known = {"torch", "torchvision", "streamlit", "plotly", "pandas", "numpy", "diskcache", "sklearn", "PIL",
             "tqdm", "pytest", "playwright", "optuna", "sqlalchemy", "starlette"}
    stdlib_or_local = {"core", "app", "tests", "bench", "pages"}
    names = set()
    for path in list(REPO.glob("core/*.py")) + list(REPO.glob("app/*.py")) + list(REPO.glob("pages/*.py")):
        for match in re.finditer(r"^\s*(?:from|import) ([a-zA-Z_][\w]*)", path.read_text(), re.M):
            names.add(match.group(1))
    import sys

    third_party = {n for n in names if n not in sys.stdlib_module_names and n not in stdlib_or_local}
    assert third_party <= known, f"imports not covered by requirements: {third_party - known}"
    requirement_names = {"sklearn": "scikit-learn", "PIL": "pillow"}
    text = (REPO / "requirements.txt").read_text() + (REPO / "requirements-dev.txt").read_text()
    for name in third_party:
        assert requirement_names.get(name, name) in text, name


def test_core_never_imports_streamlit():
    for path in REPO.glob("core/*.py"):
        assert not re.search(r"^\s*(import|from)\s+streamlit", path.read_text(), re.M), path


def test_visitors_never_see_a_traceback():
    """.streamlit/config.toml's client.showErrorDetails, as Streamlit itself reads it for an uncaught error."""
    setting = tomllib.loads((REPO / ".streamlit" / "config.toml").read_text())["client"]["showErrorDetails"]
    before = config.get_option("client.showErrorDetails")
    config.set_option("client.showErrorDetails", setting)
    try:
        shown = _error_detail_visibility(True)
    finally:
        config.set_option("client.showErrorDetails", before)
    assert not shown.show_trace and not shown.show_message


def test_readme_puts_an_open_server_behind_an_authenticating_tls_proxy():
    readme = (REPO / "README.md").read_text()
    deploying = readme.split("## Deploying", 1)[1].split("\n## ", 1)[0]
    assert "has none" in deploying and "reverse proxy" in deploying and "TLS" in deploying
    nginx = re.search(r"```nginx\n(.*?)```", deploying, re.S).group(1)
    for line in ("listen 443 ssl", "auth_basic_user_file", "proxy_http_version 1.1",
                 "proxy_set_header Upgrade $http_upgrade", 'proxy_set_header Connection "upgrade"'):
        assert line in nginx, line
    upload_mb = re.search(r"^maxUploadSize = (\d+)", (REPO / ".streamlit" / "config.toml").read_text(), re.M).group(1)
    assert f"client_max_body_size {upload_mb}m" in nginx  # the proxy lets the app's largest upload through
