"""Static checks of docker-compose.yml, deploy/Caddyfile, the Dockerfile's cluster stage and README's "More than
one server" (Docker has no engine where the tests run): what issue 25.5 asks of the deployment."""
from __future__ import annotations

import ipaddress
import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
README = (REPO / "README.md").read_text()
SECTION = README.split("## More than one server", 1)[1].split("\n## ", 1)[0]
RAY_AUTH = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": "/run/secrets/ray_token"}


def command_words(service: dict) -> list[str]:
    command = service.get("command", "")
    return shlex.split(command if isinstance(command, str) else " ".join(command[2:] if command[:2] == ["bash", "-c"]
                                                                                     else command))


def ray_starts(service: dict) -> list[list[str]]:
    """Each ``ray start ...`` in the service's command, as words."""
    words = command_words(service)
    starts = [i for i in range(len(words) - 1) if words[i:i + 2] == ["ray", "start"]]
    return [words[i:next((j for j in range(i, len(words)) if words[j] == "&&"), len(words))] for i in starts]


def option(words: list[str], name: str) -> str | None:
    return next((w.split("=", 1)[1] for w in words if w.startswith(name + "=")), None)


RAY_NODES = {name: s for name, s in SERVICES.items() if ray_starts(s)}
FRONT_ENDS = {name: s for name, s in SERVICES.items() if "app.launch" in command_words(s)}
HEAD = next(name for name, s in RAY_NODES.items() if "--head" in ray_starts(s)[0])


def address(name: str) -> str:
    return SERVICES[name]["networks"]["lab"]["ipv4_address"]


def test_the_services_are_a_head_a_gpu_worker_two_front_ends_a_proxy_and_postgresql():
    assert len(FRONT_ENDS) == 2 and set(FRONT_ENDS) < set(RAY_NODES)
    workers = [name for name in RAY_NODES if name != HEAD and name not in FRONT_ENDS]
    assert len(workers) == 1
    assert any(s.get("image", "").startswith("postgres:") for s in SERVICES.values())
    assert any(s.get("image", "").startswith("caddy:") for s in SERVICES.values())


@pytest.mark.parametrize("name", sorted(RAY_NODES))
def test_every_ray_process_uses_token_auth_with_the_secret(name):
    service = RAY_NODES[name]
    assert RAY_AUTH.items() <= service["environment"].items()
    assert "ray_token" in service["secrets"] and "ray_token" in COMPOSE["secrets"]
    assert COMPOSE["secrets"]["ray_token"]["file"].startswith("./deploy/secrets/")
    assert "deploy/secrets/" in (REPO / ".gitignore").read_text().splitlines()
    assert "deploy/secrets" in (REPO / ".dockerignore").read_text().splitlines()  # never baked into an image


@pytest.mark.parametrize("name", sorted(RAY_NODES))
def test_every_ray_node_has_an_explicit_ip_on_the_network_and_shared_memory(name):
    service = RAY_NODES[name]
    (start,) = ray_starts(service)
    subnet = ipaddress.ip_network(COMPOSE["networks"]["lab"]["ipam"]["config"][0]["subnet"])
    assert option(start, "--node-ip-address") == address(name)
    assert ipaddress.ip_address(address(name)) in subnet
    if name != HEAD:
        assert option(start, "--address") == f"{address(HEAD)}:{option(ray_starts(SERVICES[HEAD])[0], '--port')}"
    shm = service["shm_size"]
    units = {"mb": 2**20, "gb": 2**30}
    shm_bytes = int(shm[:-2]) * units[shm[-2:].lower()]
    assert shm_bytes > int(option(start, "--object-store-memory"))  # the object store fits in /dev/shm


def test_the_gpu_worker_reserves_a_gpu_and_offers_it_to_ray():
    (worker,) = [name for name in RAY_NODES if name != HEAD and name not in FRONT_ENDS]
    devices = SERVICES[worker]["deploy"]["resources"]["reservations"]["devices"]
    assert any(d["driver"] == "nvidia" and "gpu" in d["capabilities"] and d["count"] >= 1 for d in devices)
    assert int(option(ray_starts(SERVICES[worker])[0], "--num-gpus")) == devices[0]["count"]


def test_the_head_is_given_time_to_drain():
    seconds = int(SERVICES[HEAD]["stop_grace_period"].rstrip("s"))
    assert seconds > 30  # a head drains for 30 s on SIGTERM


@pytest.mark.parametrize("name", sorted(FRONT_ENDS))
def test_front_ends_reach_ray_and_postgresql_and_share_their_secret(name):
    env = FRONT_ENDS[name]["environment"]
    assert env["GRADIENT_LAB_RAY_ADDRESS"] == f"{address(HEAD)}:6379"
    db = re.fullmatch(r"postgresql://(\w+)@([\d.]+):5432/(\w+)", env["GRADIENT_LAB_SWEEP_DB"])
    postgres = next(n for n, s in SERVICES.items() if s.get("image", "").startswith("postgres:"))
    assert db and db.group(2) == address(postgres)
    assert (db.group(1), db.group(3)) == (SERVICES[postgres]["environment"]["POSTGRES_USER"],
                                          SERVICES[postgres]["environment"]["POSTGRES_DB"])
    assert env["PGPASSWORD"].startswith("${POSTGRES_PASSWORD")  # the password is not in the URL (matched above)
    others = [FRONT_ENDS[n]["environment"] for n in FRONT_ENDS if n != name]
    assert all(o["GRADIENT_LAB_SECRET"] == env["GRADIENT_LAB_SECRET"] for o in others)
    assert "--server.address=0.0.0.0" in command_words(FRONT_ENDS[name])


def test_two_front_ends_are_behind_one_sticky_address():
    (proxy,) = [s for s in SERVICES.values() if s.get("image", "").startswith("caddy:")]
    assert proxy["ports"] == ["127.0.0.1:8501:8501"]  # one address, published to the TLS proxy only
    caddyfile = (REPO / "deploy" / "Caddyfile").read_text()
    mount = next(v for v in proxy["volumes"] if v.endswith(":/etc/caddy/Caddyfile:ro"))
    assert mount.startswith("./deploy/Caddyfile")
    upstreams = re.search(r"reverse_proxy ([^{]+)\{", caddyfile).group(1).split()
    assert sorted(upstreams) == sorted(f"{address(name)}:8501" for name in FRONT_ENDS)
    assert re.search(r"^\s*lb_policy cookie \w+", caddyfile, re.M)  # sticky: Streamlit's websocket affinity
    assert "health_uri /_stcore/health" in caddyfile


def test_data_lives_on_named_volumes():
    volumes = set(COMPOSE["volumes"])
    for name in FRONT_ENDS:
        assert any(v.split(":")[0] in volumes and v.split(":")[1] == "/data/cache" for v in SERVICES[name]["volumes"])
    postgres = next(s for s in SERVICES.values() if s.get("image", "").startswith("postgres:"))
    assert any(v.split(":")[0] in volumes for v in postgres["volumes"])


@pytest.mark.parametrize("name", sorted(SERVICES))
def test_images_are_pinned_or_built_here(name):
    service = SERVICES[name]
    if "build" in service:
        assert service["build"] == {"context": ".", "target": "cluster"}
    else:
        assert re.fullmatch(r"[a-z0-9/_-]+:\d+(\.\d+)+", service["image"]), service["image"]


def test_the_cluster_stage_installs_readmes_cluster_requirements_and_the_default_stays_embedded():
    dockerfile = (REPO / "Dockerfile").read_text()
    stages = re.split(r"^FROM ", dockerfile, flags=re.M)[1:]
    cluster = next(s for s in stages if s.split("\n", 1)[0].endswith(" AS cluster"))
    (install,) = [b for b in re.findall(r"```bash\n(.*?)```", SECTION, re.S) if "requirements-cluster.txt" in b]
    assert f"RUN {install.strip()}" in cluster.splitlines()
    default = stages[-1]  # `docker build .` builds the last stage: the embedded install only
    assert "requirements-cluster.txt" not in default and " AS " not in default.split("\n", 1)[0]
    assert "ray==" in (REPO / "requirements-cluster.txt").read_text()
    assert "ray" not in (REPO / "requirements.txt").read_text()


def test_readme_says_how_to_start_and_size_it():
    for words in ("GRADIENT_LAB_RAY_ADDRESS", "RAY_AUTH_MODE=token", "RAY_AUTH_TOKEN_PATH", "GRADIENT_LAB_SWEEP_DB",
                  "docs/cluster.md", "shm_size", "/dev/shm", "0.73 GiB", "per GPU", "Sticky sessions"):
        assert words in SECTION, words
    assert any(line.startswith("docker compose up") for b in re.findall(r"```bash\n(.*?)```", SECTION, re.S)
               for line in b.splitlines())
