"""A network namespace joined to the host by a veth pair, for WebRTC media that really crosses a link.

aioice leaves 127.0.0.1 out of its ICE candidates, so the tests make their own
link: ``ip netns add``, ``ip link add … type veth peer …``, a private /30
(``10.213.<n>.1`` on the host end, ``.2`` inside; ``n`` from the process id so
two runs on one machine don't clash). The server runs in the host namespace,
the client under ``ip netns exec`` (`Link.exec`), so its only route to the
server is the veth. `Link.impair` puts netem (loss, delay and jitter) on both
ends. Needs root and iproute2 (CI runs as root; ``.ci/run`` installs it).
The veth and the namespace are removed on exit, whatever happened.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

from bench.server import ROOT


def ip(*args: str, netns: str | None = None) -> None:
    command = ["ip", *args] if netns is None else ["ip", "netns", "exec", netns, "ip", *args]
    subprocess.run(command, check=True, capture_output=True, timeout=10)


@dataclass(frozen=True)
class Link:
    netns: str
    host_if: str  # the host end of the veth
    ns_if: str  # its peer, inside the namespace
    host_addr: str  # the server's address, as the namespace sees it
    ns_addr: str

    def exec(self, *argv: str) -> list[str]:
        """A command line running `argv` inside the namespace."""
        return ["ip", "netns", "exec", self.netns, *argv]

    def python(self, module: str, *args: str) -> list[str]:
        """This interpreter running `module` inside the namespace, from the repository."""
        return self.exec("env", f"PYTHONPATH={ROOT}", sys.executable, "-m", module, *args)

    def impair(self, netem: str) -> bool:
        """netem on both ends, e.g. ``loss 5% delay 30ms 30ms``; False if the kernel has none.

        Some kernels (these test VMs' among them) are built without ``sch_netem``:
        then the client impairs its own datagrams (`tests.webrtc.peer.impair_udp`).
        """
        probe = subprocess.run(
            ["tc", "qdisc", "replace", "dev", self.host_if, "root", "netem", *netem.split()],
            check=False,
            capture_output=True,
            text=True,
        )
        if probe.returncode != 0 and "qdisc kind is unknown" in probe.stderr:
            return False
        probe.check_returncode()
        subprocess.run(
            self.exec("tc", "qdisc", "replace", "dev", self.ns_if, "root", "netem", *netem.split()),
            check=True,
            capture_output=True,
        )
        return True

    def clear(self) -> None:
        """Back to a clean link."""
        for command in (
            ["tc", "qdisc", "del", "dev", self.host_if, "root"],
            self.exec("tc", "qdisc", "del", "dev", self.ns_if, "root"),
        ):
            subprocess.run(command, check=False, capture_output=True)


@contextlib.contextmanager
def veth_namespace(tag: str = "") -> Iterator[Link]:
    n = os.getpid() % 250 + 1
    name = f"asrwr{n}{tag}"[:11]
    link = Link(
        netns=name,
        host_if=f"{name}h",
        ns_if=f"{name}n",
        host_addr=f"10.213.{n}.1",
        ns_addr=f"10.213.{n}.2",
    )
    try:
        ip("netns", "add", link.netns)
        ip("link", "add", link.host_if, "type", "veth", "peer", "name", link.ns_if)
        ip("link", "set", link.ns_if, "netns", link.netns)
        ip("addr", "add", f"{link.host_addr}/30", "dev", link.host_if)
        ip("link", "set", link.host_if, "up")
        ip("addr", "add", f"{link.ns_addr}/30", "dev", link.ns_if, netns=link.netns)
        ip("link", "set", link.ns_if, "up", netns=link.netns)
        ip("link", "set", "lo", "up", netns=link.netns)
        yield link
    finally:
        # Deleting one end deletes the pair; deleting the namespace would too.
        subprocess.run(["ip", "link", "del", link.host_if], check=False, capture_output=True)
        subprocess.run(["ip", "netns", "del", link.netns], check=False, capture_output=True)
