"""A local cluster: N service processes behind Debian's nginx or HAProxy, on loopback.

    python -m deploy.cluster --nodes 3 --port 8080 [--proxy nginx|haproxy]

Starts the nodes (``python -m app.server``, each with ``HOST=127.0.0.1`` and a free
``PORT``; everything else comes from the environment, so
``MAX_SESSIONS=2 python -m deploy.cluster`` works), then the proxy on
127.0.0.1:PORT with the repository's config (``deploy/nginx/asr-stream.conf`` or
``deploy/haproxy/asr-stream.cfg``) rendered with the nodes' ports, waits until
every node's ``/ready`` and the proxy answer, and prints one JSON line::

    {"url": "ws://127.0.0.1:8080/ws/asr-stream", "proxy": "nginx", "proxy_pid": N,
     "nodes": [{"url": "http://127.0.0.1:PORT", "pid": N}, ...]}

SIGTERM or Ctrl-C stops everything it started: the nodes first (SIGTERM, so they
drain their sessions through the still running proxy), then the proxy. It
installs nothing: a missing proxy is reported with the Debian package to install.

`Cluster` is the same thing as a context manager, for tests and benchmarks; it
can also stop, kill, restart and drain single nodes, and stop and start the proxy.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Literal, NoReturn, Self

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
NGINX_CONF = DEPLOY / "nginx" / "asr-stream.conf"
HAPROXY_CFG = DEPLOY / "haproxy" / "asr-stream.cfg"
WS_PATH = "/ws/asr-stream"
LOOPBACK = "127.0.0.1"

Proxy = Literal["nginx", "haproxy"]
PROXIES: tuple[Proxy, ...] = ("nginx", "haproxy")
# Debian puts both in /usr/sbin, which is not on a normal user's PATH.
SBIN = ("/usr/sbin", "/usr/local/sbin")

# The repository's configs list their nodes between these two comment lines.
NODES_BEGIN = "# asr-stream nodes: begin"
NODES_END = "# asr-stream nodes: end"
_NODES_BLOCK = re.compile(
    rf"^(?P<indent>[ \t]*){re.escape(NODES_BEGIN)}\n.*?^[ \t]*{re.escape(NODES_END)}$",
    re.MULTILINE | re.DOTALL,
)

NODE_READY_TIMEOUT_SEC = 180.0  # a node loads and warms its default engine first
PROXY_READY_TIMEOUT_SEC = 20.0
POLL_SEC = 0.2
HTTP_TIMEOUT_SEC = 2.0
STOP_MARGIN_SEC = 15.0  # beyond SHUTDOWN_GRACE_SEC: last finals, then the process exits
PROXY_STOP_TIMEOUT_SEC = 10.0
DEFAULT_SHUTDOWN_GRACE_SEC = 30.0  # app.settings.Settings.shutdown_grace_sec


class ClusterError(RuntimeError):
    """The cluster could not start: a missing program, or a process that never got ready."""


def find_program(name: str) -> str | None:
    """The path of ``name`` on PATH or in Debian's sbin folders."""
    return shutil.which(name) or shutil.which(name, path=os.pathsep.join(SBIN))


def require_proxy(proxy: Proxy) -> str:
    path = find_program(proxy)
    if path is None:
        raise ClusterError(
            f"{proxy} is not installed: install the Debian package with "
            f"'apt-get install {proxy}' (this command installs nothing itself)"
        )
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def replace_nodes(config: str, lines: Sequence[str]) -> str:
    """``config`` with the lines between the node markers replaced by ``lines``."""

    def block(match: re.Match[str]) -> str:
        indent = match["indent"]
        body = [NODES_BEGIN, *lines, NODES_END]
        return "\n".join(indent + line for line in body)

    rendered, count = _NODES_BLOCK.subn(block, config)
    if count != 1:
        raise ClusterError(f"the config must hold one '{NODES_BEGIN}' … '{NODES_END}' block")
    return rendered


def render_nginx_site(ports: Sequence[int], listen_port: int, template: str | None = None) -> str:
    """``deploy/nginx/asr-stream.conf`` with these nodes, listening on loopback."""
    config = NGINX_CONF.read_text() if template is None else template
    config = replace_nodes(config, [f"server {LOOPBACK}:{p} max_fails=0;" for p in ports])
    config, count = re.subn(
        r"^(\s*)listen\s+\S+;", rf"\1listen {LOOPBACK}:{listen_port};", config, flags=re.M
    )
    if count != 1:
        raise ClusterError("the nginx config must hold one 'listen' line")
    return config


def render_nginx_main(workdir: Path, site: Path) -> str:
    """A main nginx.conf that runs in the foreground with everything under ``workdir``."""
    temps = ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    temp = {name: workdir / "temp" / name for name in temps}
    return "\n".join(
        [
            "daemon off;",
            "worker_processes 1;",
            f"pid {workdir / 'nginx.pid'};",
            f"error_log {workdir / 'nginx-error.log'} notice;",
            "events { worker_connections 1024; }",
            "http {",
            f"    access_log {workdir / 'nginx-access.log'};",
            *(f"    {name}_temp_path {path};" for name, path in temp.items()),
            f"    include {site};",
            "}",
            "",
        ]
    )


def render_haproxy(ports: Sequence[int], listen_port: int, template: str | None = None) -> str:
    """``deploy/haproxy/asr-stream.cfg`` with these nodes, listening on loopback."""
    config = HAPROXY_CFG.read_text() if template is None else template
    servers = [f"server node{i} {LOOPBACK}:{p}" for i, p in enumerate(ports, start=1)]
    config = replace_nodes(config, servers)
    config, count = re.subn(
        r"^(\s*)bind\s+\S+", rf"\1bind {LOOPBACK}:{listen_port}", config, flags=re.M
    )
    if count != 1:
        raise ClusterError("the HAProxy config must hold one 'bind' line")
    return config


def http_get(url: str, timeout: float = HTTP_TIMEOUT_SEC) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of a GET (any status; a body that is not JSON is ``{}``)."""
    return _request(urllib.request.Request(url), timeout)


def http_post(
    url: str, headers: Mapping[str, str] | None = None, timeout: float = HTTP_TIMEOUT_SEC
) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=b"", method="POST", headers=dict(headers or {}))
    return _request(request, timeout)


def _request(request: urllib.request.Request, timeout: float) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            return int(resp.status), _json(resp.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, _json(exc.read())


def _json(raw: bytes) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _answers(url: str) -> bool:
    with contextlib.suppress(OSError):
        return http_get(url)[0] == 200
    return False


def _stop(proc: subprocess.Popen[bytes], sig: int, timeout: float) -> None:
    """Signal ``proc`` and wait for it; SIGKILL when it outlives ``timeout``."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


@dataclass
class Node:
    """One service process, always on the same port (the proxy config names it)."""

    index: int
    port: int
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}{WS_PATH}"

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise ClusterError(f"node {self.index} is not running")
        return self.proc.pid

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def ready(self) -> tuple[int, dict[str, Any]]:
        """``GET /ready``: (status, body)."""
        return http_get(self.url + "/ready")

    def describe(self) -> dict[str, Any]:
        return {"url": self.url, "pid": self.pid}


class Cluster:
    """N nodes behind one proxy; a context manager that stops all it started.

    ``env`` is added to this process's environment for the nodes; ``command`` is
    how a node starts (``HOST`` and ``PORT`` come in its environment).
    """

    def __init__(
        self,
        nodes: int = 3,
        port: int | None = None,
        proxy: Proxy = "nginx",
        env: Mapping[str, str] | None = None,
        workdir: Path | None = None,
        command: Sequence[str] = (sys.executable, "-m", "app.server"),
    ) -> None:
        if nodes < 1:
            raise ValueError("a cluster needs at least one node")
        if proxy not in PROXIES:
            raise ValueError(f"proxy must be one of {', '.join(PROXIES)}")
        self.proxy: Proxy = proxy
        self.proxy_path = require_proxy(proxy)
        self.port = port or free_port()
        # The proxy runs on this machine: its X-Forwarded-For names each client, for the
        # nodes' per-client limits (else every client would be the proxy's one address).
        self.env = {"TRUSTED_PROXIES": LOOPBACK, **os.environ, **(env or {}), "HOST": LOOPBACK}
        self.command = list(command)
        self._tempdir: tempfile.TemporaryDirectory[str] | None = None
        if workdir is None:
            self._tempdir = tempfile.TemporaryDirectory(prefix="asr-cluster-")
            workdir = Path(self._tempdir.name)
        self.workdir = workdir
        self.nodes = [Node(i, free_port(), workdir / f"node{i}.log") for i in range(1, nodes + 1)]
        self.proxy_proc: subprocess.Popen[bytes] | None = None
        self._proxy_log: Path = workdir / f"{proxy}.log"

    # -- addresses -------------------------------------------------------------

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    @property
    def url(self) -> str:
        """The sessions' URL: the proxy's ``/ws/asr-stream``."""
        return f"ws://{LOOPBACK}:{self.port}{WS_PATH}"

    @property
    def shutdown_grace_sec(self) -> float:
        return float(self.env.get("SHUTDOWN_GRACE_SEC", DEFAULT_SHUTDOWN_GRACE_SEC))

    def describe(self) -> dict[str, Any]:
        """What ``python -m deploy.cluster`` prints."""
        return {
            "url": self.url,
            "proxy": self.proxy,
            "proxy_pid": self.proxy_proc.pid if self.proxy_proc else None,
            "nodes": [node.describe() for node in self.nodes],
        }

    # -- whole cluster ---------------------------------------------------------

    def __enter__(self) -> Self:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start every node, wait until all are ready, then start the proxy and wait for it."""
        # The workers of an nginx started by root run as nobody: they must reach the folder.
        self.workdir.chmod(0o755)
        for node in self.nodes:
            self._spawn(node)
        for node in self.nodes:
            self.wait_node_ready(node)
        self._start_proxy()

    def stop(self) -> None:
        """SIGTERM to every node (they drain through the proxy), then stop the proxy."""
        for node in self.nodes:
            if node.running and node.proc is not None:
                with contextlib.suppress(ProcessLookupError):
                    node.proc.send_signal(signal.SIGTERM)
        for node in self.nodes:
            if node.proc is not None:
                _stop(node.proc, signal.SIGTERM, self.shutdown_grace_sec + STOP_MARGIN_SEC)
        if self.proxy_proc is not None:
            # nginx: SIGQUIT is its graceful stop; HAProxy: SIGUSR1. Nodes are gone by now.
            sig = signal.SIGQUIT if self.proxy == "nginx" else signal.SIGUSR1
            _stop(self.proxy_proc, sig, PROXY_STOP_TIMEOUT_SEC)
        if self._tempdir is not None:
            self._tempdir.cleanup()
            self._tempdir = None

    # -- single nodes ------------------------------------------------------------

    def stop_node(self, node: Node, timeout: float | None = None) -> int:
        """SIGTERM (the node drains, then exits); wait for it. Returns its exit status."""
        if node.proc is None:
            raise ClusterError(f"node {node.index} was never started")
        limit = self.shutdown_grace_sec + STOP_MARGIN_SEC if timeout is None else timeout
        _stop(node.proc, signal.SIGTERM, limit)
        return int(node.proc.returncode)

    def kill_node(self, node: Node) -> None:
        """SIGKILL: the node dies at once, as on a crash."""
        if node.proc is not None:
            _stop(node.proc, signal.SIGKILL, PROXY_STOP_TIMEOUT_SEC)

    def start_node(self, node: Node) -> None:
        """Start a node that was stopped, on its old port, and wait until it is ready."""
        if node.running:
            raise ClusterError(f"node {node.index} is already running")
        self._spawn(node)
        self.wait_node_ready(node)

    def drain_node(self, node: Node, api_key: str | None = None) -> tuple[int, dict[str, Any]]:
        """``POST /drain`` on the node itself (as a Kubernetes preStop hook does)."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return http_post(node.url + "/drain", headers)

    def reload_proxy(self) -> None:
        """Reload the proxy's config as an operator does (nginx SIGHUP, HAProxy SIGUSR2).

        Both start new workers and let the old ones serve their open connections
        (upgraded sessions included) until those end.
        """
        if self.proxy_proc is None:
            raise ClusterError("the proxy is not running")
        self.proxy_proc.send_signal(signal.SIGHUP if self.proxy == "nginx" else signal.SIGUSR2)

    def stop_proxy(self) -> None:
        """Stop the proxy at once, as a crash or a hard restart does: every open
        connection through it is cut (nginx SIGTERM, HAProxy SIGTERM: the fast stops)."""
        if self.proxy_proc is not None:
            _stop(self.proxy_proc, signal.SIGTERM, PROXY_STOP_TIMEOUT_SEC)

    def start_proxy(self) -> None:
        """Start the proxy again on the same port, and wait until it answers."""
        if self.proxy_proc is not None and self.proxy_proc.poll() is None:
            raise ClusterError(f"{self.proxy} is already running")
        self._start_proxy()

    def wait_node_ready(self, node: Node, timeout: float = NODE_READY_TIMEOUT_SEC) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if node.proc is None or node.proc.poll() is not None:
                code = None if node.proc is None else node.proc.returncode
                raise ClusterError(
                    f"node {node.index} exited ({code}) before it was ready; see {node.log}:\n"
                    + _tail(node.log)
                )
            if _answers(node.url + "/ready"):
                return
            time.sleep(POLL_SEC)
        raise ClusterError(f"node {node.index} was not ready in {timeout:g} s; see {node.log}")

    # -- internals -------------------------------------------------------------

    def _spawn(self, node: Node) -> None:
        env = {**self.env, "PORT": str(node.port)}
        with open(node.log, "ab") as log:
            # A session of its own: a Ctrl-C in the terminal reaches only this process,
            # which then stops the nodes before the proxy, in that order.
            node.proc = subprocess.Popen(
                self.command,
                cwd=ROOT,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _start_proxy(self) -> None:
        ports = [node.port for node in self.nodes]
        if self.proxy == "nginx":
            site = self.workdir / "asr-stream.conf"
            site.write_text(render_nginx_site(ports, self.port))
            main = self.workdir / "nginx.conf"
            main.write_text(render_nginx_main(self.workdir, site))
            (self.workdir / "temp").mkdir(exist_ok=True)
            argv = [
                self.proxy_path,
                "-p", str(self.workdir),
                "-c", str(main),
                "-e", str(self.workdir / "nginx-error.log"),
            ]  # fmt: skip
        else:
            cfg = self.workdir / "haproxy.cfg"
            cfg.write_text(render_haproxy(ports, self.port))
            # -W: master-worker, so SIGUSR2 reloads as SIGHUP does nginx; -db: foreground.
            argv = [self.proxy_path, "-W", "-db", "-f", str(cfg)]
        with open(self._proxy_log, "ab") as log:
            self.proxy_proc = subprocess.Popen(
                argv,
                cwd=self.workdir,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + PROXY_READY_TIMEOUT_SEC
        while time.monotonic() < deadline:
            if self.proxy_proc.poll() is not None:
                raise ClusterError(
                    f"{self.proxy} exited ({self.proxy_proc.returncode}):\n"
                    + _tail(self._proxy_log)
                    + _tail(self.workdir / "nginx-error.log")
                )
            if _answers(self.http_url + "/ready"):
                return
            time.sleep(POLL_SEC)
        raise ClusterError(f"{self.proxy} did not answer on port {self.port}")


def _tail(path: Path, lines: int = 20) -> str:
    with contextlib.suppress(OSError):
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) + "\n"
    return ""


@contextlib.contextmanager
def _stop_on_signals() -> Iterator[None]:
    """SIGTERM ends the process like Ctrl-C does, so the cluster's cleanup runs."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _watch(cluster: Cluster) -> NoReturn:
    """Until a signal: say so on stderr when a node exits (the others go on)."""
    reported: set[int] = set()
    while True:
        for node in cluster.nodes:
            if not node.running and node.index not in reported:
                reported.add(node.index)
                print(f"deploy.cluster: node {node.index} ({node.url}) exited", file=sys.stderr)
        time.sleep(1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=3, help="service processes (default 3)")
    parser.add_argument("--port", type=int, default=8080, help="the proxy's port (default 8080)")
    parser.add_argument("--proxy", choices=PROXIES, default="nginx")
    parser.add_argument(
        "--workdir", type=Path, help="keep configs and logs here (default: a temporary folder)"
    )
    args = parser.parse_args(argv)
    with _stop_on_signals():
        try:
            if args.workdir:
                args.workdir.mkdir(parents=True, exist_ok=True)
            with Cluster(args.nodes, args.port, args.proxy, workdir=args.workdir) as cluster:
                print(json.dumps(cluster.describe()), flush=True)
                _watch(cluster)
        except ClusterError as exc:
            print(f"deploy.cluster: {exc}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            return 0
    return 0  # not reached: _watch returns only by a signal


if __name__ == "__main__":
    sys.exit(main())
