"""Nothing listens that need not: a watcher of the listening sockets of this process during a run.

xllamacpp opens an HTTP listener for every model runtime, although sluicegate only calls it in-process.
During a real nightly run (tests/flows/test_nightly.py watches the quick start's), a watcher thread lists
the process's listening sockets from /proc (psutil is only a transitive dependency here) and probes each
one as it appears: every one must be on 127.0.0.1 and refuse requests without its key (401), with no web UI.

What is not a model listener: Prefect's test harness serves its API from a child process (uvicorn on
127.0.0.1), which must answer without a key; for it (and any other descendant) only loopback is checked.
/health is public in llama.cpp by design and says only {"status":"ok"}: not probed.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

# Endpoints that must refuse a request without the key; the web UI ("/" and its files) must not exist.
PROTECTED = [("GET", "/v1/models"), ("GET", "/models"), ("POST", "/completion"), ("POST", "/v1/completions"),
             ("POST", "/v1/chat/completions"), ("POST", "/tokenize"), ("GET", "/slots"), ("GET", "/props"),
             ("GET", "/metrics"), ("GET", "/lora-adapters")]
NO_UI = [("GET", "/"), ("GET", "/index.html")]


def _address(hex_ip: str) -> str:
    raw = bytes.fromhex(hex_ip)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    return socket.inet_ntop(socket.AF_INET6, b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4)))


def listening(pid: int) -> dict[str, tuple[str, int]]:
    """The TCP sockets process `pid` listens on: socket inode -> (address, port)."""
    inodes = set()
    try:
        for fd in list(Path(f"/proc/{pid}/fd").iterdir()):
            try:
                link = os.readlink(fd)
            except OSError:  # closed meanwhile (the listing's own descriptor is one)
                continue
            if link.startswith("socket:["):
                inodes.add(link[8:-1])
    except OSError:  # the process ended
        return {}
    found = {}
    for table in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            (hex_ip, hex_port), state, inode = fields[1].split(":"), fields[3], fields[9]
            if state == "0A" and inode in inodes:  # 0A: TCP_LISTEN
                found[inode] = (_address(hex_ip), int(hex_port, 16))
    return found


def descendants(pid: int) -> set[int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = set(), {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def probe(address: str, port: int) -> dict[str, int | str]:
    """Each endpoint's HTTP status without a key. llama.cpp answers 503 to everything while its model loads:
    retried until it is ready."""
    def status(method: str, path: str) -> int | str:
        request = urllib.request.Request(f"http://{address}:{port}{path}", method=method,
                                         data=b"{}" if method == "POST" else None,
                                         headers={"Content-Type": "application/json", "Accept-Encoding": "gzip"})
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status
        except urllib.error.HTTPError as e:
            return e.code
        except OSError as e:  # refused, reset, timed out: recorded, and the assertion says which
            return f"{type(e).__name__}: {getattr(e, 'reason', e)}"

    deadline = time.monotonic() + 180
    while True:
        answers = {f"{m} {p}": status(m, p) for m, p in PROTECTED + NO_UI}
        if 503 not in answers.values() or time.monotonic() > deadline:
            return answers
        time.sleep(0.2)


class Watcher(threading.Thread):
    """Polls the process's listening sockets (and its descendants') and probes each new one at once."""

    def __init__(self):
        super().__init__(daemon=True)
        self.stop = threading.Event()
        self.own: dict[str, tuple[str, int]] = {}  # inode -> address: a socket counts once, ports may be reused
        self.answers: dict[str, dict[str, int | str]] = {}
        self.others: set[tuple[str, int]] = set()
        self._probes: list[threading.Thread] = []

    def run(self) -> None:
        polls = 0
        while not self.stop.is_set():
            for inode, address in listening(os.getpid()).items():
                if inode not in self.own:
                    self.own[inode] = address
                    thread = threading.Thread(target=self._probe, args=(inode, address), daemon=True)
                    thread.start()
                    self._probes.append(thread)
            if polls % 20 == 0:  # about once a second: a scan of /proc
                for pid in descendants(os.getpid()):
                    self.others |= set(listening(pid).values())
            polls += 1
            self.stop.wait(0.05)

    def _probe(self, inode: str, address: tuple[str, int]) -> None:
        self.answers[inode] = probe(*address)

    def finish(self) -> None:
        self.stop.set()
        self.join()
        for thread in self._probes:
            thread.join(timeout=200)


def assert_nothing_listens_that_need_not(watcher: Watcher) -> None:
    """Every socket the process listened on was loopback, refused requests without its key and served no UI."""
    # One listener per model runtime (small and large); nothing else in the process listens.
    assert len(watcher.own) >= 2, f"too few listeners seen to prove anything: {watcher.own}"
    for inode, (address, port) in watcher.own.items():
        assert address == "127.0.0.1", f"listening on {address}:{port}"
        answers = watcher.answers[inode]
        refused = {k: v for k, v in answers.items() if k in {f"{m} {p}" for m, p in PROTECTED}}
        assert set(refused.values()) == {401}, f"{address}:{port} without its key: {refused}"
        no_ui = {k: v for k, v in answers.items() if k in {f"{m} {p}" for m, p in NO_UI}}
        assert set(no_ui.values()) <= {401, 404}, f"{address}:{port} serves a web UI: {no_ui}"
    # Prefect's API server (the test harness's child process) and anything else started: loopback only.
    assert watcher.others and {address for address, _ in watcher.others} == {"127.0.0.1"}, watcher.others
