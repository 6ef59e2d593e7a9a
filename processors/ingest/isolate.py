"""Runs one parse in a worker process with a deadline and a memory cap.

pypdf is pure Python: in the caller's process a pathological file can spin for minutes or allocate
gigabytes, and a thread cannot be stopped. A worker process can. The caller waits up to the deadline,
then kills the worker's whole process group (an OCR child included) and starts a fresh worker for
the next document. Workers are reused, so the cost is one interpreter start per calling process plus
a pickle round trip per document (bench/ingest_pdf_worker.py measures it).

The worker is `python -c '...isolate import serve; serve()'`: no multiprocessing, so nothing depends on how the
caller was started (Beam worker, Prefect thread, pytest). It exits when its parent goes away, even if
the parent was SIGKILLed mid-call.

The worker parses untrusted files, so it gets only the environment it needs (`worker_environment`):
no API keys, tokens or PDF passwords (those are resolved by the caller and passed per call).
"""

from __future__ import annotations

import atexit
import importlib
import os
import pickle
import resource
import select
import signal
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

_HEADER = struct.Struct("<Q")
_READY = b"R"
_START_SECONDS = 120.0  # interpreter start and imports: generous, a loaded machine is slow; not the parse budget
_GRACE_SECONDS = 1.0  # on top of the caller's budget: the worker's own OCR timeouts fire first
# What the worker (Python, pypdf, Pillow, the tesseract binary) reads from the environment: finding
# programs, libraries and the project, locale, temp folder, OCR data. Nothing else is passed.
_ENV_KEEP = frozenset({
    "PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "TEMP", "TMP", "LD_LIBRARY_PATH", "TESSDATA_PREFIX",
    "PYTHONPATH", "PYTHONHOME", "PYTHONUTF8", "PYTHONIOENCODING", "PYTHONDONTWRITEBYTECODE", "PYTHONHASHSEED",
    "VIRTUAL_ENV",
})
_ENV_KEEP_PREFIXES = ("LC_",)  # LC_ALL, LC_CTYPE ...


class IsolatedError(Exception):
    """The call did not return a value. `kind`: timeout | memory | crashed | error."""

    def __init__(self, kind: str, message: str):
        super().__init__(message)
        self.kind = kind


def worker_environment(environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The parse worker's environment: an allow-list of `environ` (default os.environ), so a key or
    token in the caller's environment never reaches code that parses untrusted files."""
    environ = os.environ if environ is None else environ
    env = {k: v for k, v in environ.items() if k in _ENV_KEEP or k.startswith(_ENV_KEEP_PREFIXES)}
    env["OMP_THREAD_LIMIT"] = "1"  # tesseract: one thread per worker, the model needs the rest
    return env


class _Worker:
    def __init__(self) -> None:
        env = worker_environment()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", f"from {__name__} import serve; serve()"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            start_new_session=True,  # own process group: a kill also reaches its OCR child
            env=env, close_fds=True)
        self._out = self.proc.stdout.fileno()
        self.owner = os.getpid()
        if _read_exact(self._out, 1, time.monotonic() + _START_SECONDS) != _READY:
            self.kill()
            raise IsolatedError("crashed", "the parse worker did not start")

    def call(self, target: str, args: tuple, seconds: float, memory_bytes: int) -> Any:
        payload = pickle.dumps((target, args, memory_bytes), protocol=pickle.HIGHEST_PROTOCOL)
        try:
            self.proc.stdin.write(_HEADER.pack(len(payload)) + payload)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise IsolatedError("crashed", f"the parse worker is gone ({type(e).__name__})") from None
        deadline = time.monotonic() + seconds + _GRACE_SECONDS
        (size,) = _HEADER.unpack(_read_exact(self._out, _HEADER.size, deadline))
        kind, value = pickle.loads(_read_exact(self._out, size, deadline))
        if kind == "ok":
            return value
        raise IsolatedError(kind, value)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # its own group (start_new_session): OCR children too
        except (ProcessLookupError, PermissionError):
            pass
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass


def _read_exact(fd: int, n: int, deadline: float) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or not select.select([fd], [], [], remaining)[0]:
            raise IsolatedError("timeout", "deadline passed")
        chunk = os.read(fd, min(n - len(buf), 1 << 20))
        if not chunk:
            raise IsolatedError("crashed", "the parse worker died")
        buf += chunk
    return bytes(buf)


_idle: list[_Worker] = []
_lock = threading.Lock()


def run_isolated(func: Callable, *args: Any, seconds: float, memory_mb: int) -> Any:
    """func(*args) in a worker process; raises IsolatedError on timeout, memory cap, crash or exception.

    func must be a module-level function (it is imported by name in the worker); args must pickle.
    """
    target = f"{func.__module__}:{func.__qualname__}"
    with _lock:
        if _idle and _idle[0].owner != os.getpid():  # a forked caller: those workers talk to the parent
            _idle.clear()
        worker = _idle.pop() if _idle else None
    if worker is None or not worker.alive():
        worker = _Worker()
    try:
        value = worker.call(target, args, seconds, memory_mb * 1024 * 1024)
    except IsolatedError as e:
        if e.kind != "error":  # timed out, hit the memory cap or died: never reuse it
            worker.kill()
            worker = None
        raise
    finally:
        if worker is not None:
            with _lock:
                _idle.append(worker)
    return value


@atexit.register
def shutdown() -> None:
    """Stops the idle workers (a busy one belongs to a caller that is still running)."""
    with _lock:
        workers, _idle[:] = [w for w in _idle if w.owner == os.getpid()], []
    for worker in workers:
        worker.kill()


# ---- the worker side ----

def _exit_with_parent(parent: int) -> None:
    """A worker whose parent died (even by SIGKILL, mid-parse) must not keep spinning on its own."""
    while True:
        time.sleep(0.5)
        if os.getppid() != parent:
            os._exit(0)


def serve() -> None:
    """The worker's loop: one request in, one pickled (kind, value) out, until stdin closes."""
    channel = os.fdopen(os.dup(1), "wb")  # the protocol's only channel
    os.dup2(2, 1)  # anything a library prints goes to stderr, never into the protocol
    sys.stdout = sys.stderr
    requests = sys.stdin.buffer
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    _, hard = resource.getrlimit(resource.RLIMIT_AS)
    channel.write(_READY)
    channel.flush()
    while True:
        header = requests.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return  # the parent closed the pipe
        target, args, memory_bytes = pickle.loads(requests.read(_HEADER.unpack(header)[0]))
        module, name = target.split(":")
        try:
            func = getattr(importlib.import_module(module), name)
            if hard == resource.RLIM_INFINITY or memory_bytes < hard:
                resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, hard))
            result = ("ok", func(*args))
        except MemoryError:
            result = ("memory", "the parse needed more memory than the limit")
        except BaseException as e:  # noqa: BLE001 - reported to the caller, who decides
            result = ("error", f"{type(e).__name__}: {e}"[:500])
        finally:
            resource.setrlimit(resource.RLIMIT_AS, (hard, hard))
        data = pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL)
        channel.write(_HEADER.pack(len(data)) + data)
        channel.flush()

