"""Sandboxed execution of model-written Python (program-of-thought, tool use,
GRPO rule rewards).

Why this shape: a model's program is hostile until proven otherwise, and the
evaluator must survive thousands of them.  Every program runs in a fresh
interpreter started through this very file acting as a *launcher*
(``python -I sandbox.py <json>``, stdlib only, so no ``preexec_fn`` in a
threaded parent).  The launcher, before running the program:

* sets RLIMIT_CPU / RLIMIT_AS / RLIMIT_FSIZE / RLIMIT_NPROC / RLIMIT_CORE;
* when running as root: enters new network and mount namespaces (no
  interfaces but a down loopback: no network), bind-mounts the fresh temp
  working directory read-write and remounts every other mount read-only (no
  writes outside it), then drops to a per-run unprivileged uid/gid (so
  RLIMIT_NPROC bounds fork bombs - root ignores it - and signals to the
  evaluator fail with EPERM);
* installs an audit hook refusing sockets and writes outside the work dir
  (defence in depth, and the only file/network guard when not root);
* asks for SIGKILL if the evaluator dies (PR_SET_PDEATHSIG).

The parent gives it a scrubbed environment, its own session/process group,
reads stdout/stderr with a cap, enforces a wall-clock timeout and afterwards
kills the whole group *and* every process still owned by the run's uid (a
child that called setsid() has left the group but not the uid).
"""

from __future__ import annotations

import ctypes
import json
import os
import random
import resource
import selectors
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Iterable

STATUSES = ("ok", "error", "timeout", "killed")

# Per-run uids come from this range; they need no /etc/passwd entry.
_UID_BASE = 1_500_000
_UID_SPAN = 1_000_000
_uid_lock = threading.Lock()
_uid_rng = random.Random(os.getpid() ^ int(time.time() * 1e6))
_uids_in_use: set[int] = set()


@dataclass
class ExecResult:
    """Outcome of one sandboxed program."""
    stdout: str
    stderr: str
    status: str                 # one of STATUSES
    returncode: int | None = None
    reason: str = ""            # why it was stopped (timeout, output limit, signal...)
    duration: float = 0.0
    truncated: bool = False     # output exceeded the cap

    @property
    def ok(self) -> bool:
        return self.status == "ok"


@dataclass
class SandboxLimits:
    """Resource limits for one program (defaults suit PoT / tool calls)."""
    memory_mb: int = 2048       # RLIMIT_AS; numpy/sympy imports fit
    cpu_seconds: int | None = None   # default: ceil(wall timeout) + 1
    max_output_bytes: int = 64 * 1024    # per stream, what we keep
    max_file_bytes: int = 16 * 1024 * 1024   # RLIMIT_FSIZE
    max_processes: int = 32     # RLIMIT_NPROC for the run's own uid
    extra_env: dict = field(default_factory=dict)


def _alloc_uid() -> int:
    with _uid_lock:
        while True:
            uid = _UID_BASE + _uid_rng.randrange(_UID_SPAN)
            if uid not in _uids_in_use:
                _uids_in_use.add(uid)
                return uid


def _free_uid(uid: int) -> None:
    with _uid_lock:
        _uids_in_use.discard(uid)


def _pids_of_uid(uid: int) -> list[int]:
    """Live (non-zombie) processes whose real uid is ``uid``."""
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/status") as f:
                state = uid_line = None
                for line in f:
                    if line.startswith("State:"):
                        state = line.split()[1]
                    elif line.startswith("Uid:"):
                        uid_line = line
                        break
        except OSError:
            continue
        if uid_line and int(uid_line.split()[1]) == uid and state not in ("Z", "X"):
            pids.append(int(name))
    return pids


def _kill_all(pgid: int, uid: int | None) -> None:
    """Kill the process group and, if the run had its own uid, every process of it."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if uid is None:
        return
    for _ in range(200):                 # a fork bomb may race us; repeat until empty
        pids = _pids_of_uid(uid)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        time.sleep(0.005)


def remaining_processes(uid: int) -> list[int]:
    """For tests: processes still alive under a run's uid."""
    return _pids_of_uid(uid)


def _scrubbed_env(workdir: str, extra: dict) -> dict:
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1", "PYTHONHASHSEED": "0", "PYTHONUNBUFFERED": "1",
        "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        "MPLBACKEND": "Agg",
    }
    env.update({str(k): str(v) for k, v in extra.items()})
    return env


def execute(code: str, timeout: float = 10.0, *, limits: SandboxLimits | None = None,
            _record: dict | None = None) -> ExecResult:
    """Run ``code`` as a Python program in the sandbox and return what happened.

    status: ``ok`` (exit 0), ``error`` (non-zero exit, e.g. an exception or
    MemoryError), ``timeout`` (wall clock), ``killed`` (a signal such as
    SIGXCPU / SIGXFSZ / SIGKILL, or the output cap was exceeded).
    ``_record`` (tests) receives the workdir, uid and pid of the run.
    """
    if not isinstance(code, str):
        raise TypeError(f"execute: code must be str, got {type(code).__name__}")
    if not timeout or timeout <= 0:
        raise ValueError(f"execute: timeout must be > 0 seconds, got {timeout!r}")
    lim = limits or SandboxLimits()
    workdir = tempfile.mkdtemp(prefix="dsm-sbx-")
    uid = _alloc_uid() if os.geteuid() == 0 else None
    # a plain write: this file is also the stdlib-only launcher, so it imports
    # nothing from the project (and the fresh workdir has no reader to race)
    with open(os.path.join(workdir, "main.py"), "w", encoding="utf-8") as f:
        f.write(code)
    if _record is not None:
        _record.update(workdir=workdir, uid=uid)
    t0 = time.monotonic()
    proc = _spawn(workdir, uid, lim.cpu_seconds or int(timeout) + 1, lim)
    if _record is not None:
        _record["pid"] = proc.pid
    bufs = {proc.stdout: bytearray(), proc.stderr: bytearray()}
    try:
        status, reason, truncated = _collect(proc, bufs, t0 + timeout, timeout, lim.max_output_bytes)
    finally:
        rc = _reap(proc, bufs, workdir, uid)
    if status is None:
        status, reason = _exit_status(rc)
    out = bufs[proc.stdout].decode("utf-8", "replace")
    err = bufs[proc.stderr].decode("utf-8", "replace")
    return ExecResult(out, err, status, rc, reason, time.monotonic() - t0, truncated)


def _spawn(workdir: str, uid: int | None, cpu: int, lim: SandboxLimits) -> subprocess.Popen:
    """The launcher (this file) in a fresh interpreter, its own session and a
    scrubbed environment; it applies ``cfg`` before running main.py."""
    cfg = {"workdir": workdir, "uid": uid, "cpu": cpu, "mem": lim.memory_mb * 2**20,
           "fsize": lim.max_file_bytes, "nproc": lim.max_processes}
    return subprocess.Popen(
        [sys.executable, "-I", "-B", os.path.abspath(__file__), json.dumps(cfg)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        cwd=workdir, env=_scrubbed_env(workdir, lim.extra_env),
        start_new_session=True, close_fds=True)


def _collect(proc: subprocess.Popen, bufs: dict, deadline: float, timeout: float,
             cap: int) -> tuple[str | None, str, bool]:
    """Read stdout and stderr into ``bufs`` (``cap`` bytes each kept) until
    both close, the wall clock runs out or a stream passes the cap.  Returns
    (status, reason, truncated); status None when the program ended on its own."""
    sel = selectors.DefaultSelector()
    try:
        for s in bufs:
            os.set_blocking(s.fileno(), False)
            sel.register(s, selectors.EVENT_READ)
        exited_at = None
        while sel.get_map():
            now = time.monotonic()
            if now >= deadline:
                return "timeout", f"wall-clock timeout after {timeout:g}s", False
            if exited_at is None and proc.poll() is not None:
                exited_at = now
            if exited_at is not None and now - exited_at > 0.2:
                break   # a leftover grandchild holds the pipe open; stop reading
            wait = min(deadline - now, 0.05 if exited_at is None else 0.02)
            truncated = False
            for key, _ in sel.select(wait):
                try:
                    chunk = os.read(key.fileobj.fileno(), 65536)
                except BlockingIOError:
                    continue
                if not chunk:
                    sel.unregister(key.fileobj)
                    continue
                buf = bufs[key.fileobj]
                room = cap - len(buf)
                if room > 0:
                    buf += chunk[:room]
                if len(chunk) > room:
                    truncated = True
            if truncated:
                return "killed", f"output exceeded {cap} bytes", True
        return None, "", False
    finally:
        sel.close()


def _reap(proc: subprocess.Popen, bufs: dict, workdir: str, uid: int | None) -> int | None:
    """Kill whatever the run left, close its pipes, remove its workdir and free
    its uid; returns the exit status (negative: the signal)."""
    _kill_all(proc.pid, uid)
    try:
        rc = proc.wait(timeout=5)
    except subprocess.TimeoutExpired:   # cannot happen after SIGKILL, but never hang
        rc = None
    for s in bufs:
        s.close()
    shutil.rmtree(workdir, ignore_errors=True)
    if uid is not None:
        _free_uid(uid)
    return rc


def _exit_status(rc: int | None) -> tuple[str, str]:
    if rc == 0:
        return "ok", ""
    if rc is not None and rc < 0:
        sig = -rc
        return "killed", {signal.SIGXCPU: "CPU time limit", signal.SIGXFSZ: "file size limit",
                          signal.SIGKILL: "SIGKILL"}.get(sig, f"signal {sig}")
    return "error", f"exit code {rc}"


class SandboxPool:
    """Run many programs concurrently (each still in its own sandbox).

    Threads only wait on child processes, so a pool of ``workers`` threads
    keeps ``workers`` sandboxes busy without the GIL mattering.
    """

    def __init__(self, workers: int | None = None, limits: SandboxLimits | None = None):
        self.workers = workers or max(2, os.cpu_count() or 2)
        self.limits = limits
        self._ex = ThreadPoolExecutor(self.workers, thread_name_prefix="sandbox")

    def map(self, codes: Iterable[str], timeout: float = 10.0) -> list[ExecResult]:
        futs = [self._ex.submit(execute, c, timeout, limits=self.limits) for c in codes]
        return [f.result() for f in futs]

    def submit(self, code: str, timeout: float = 10.0, **kw):
        kw.setdefault("limits", self.limits)
        return self._ex.submit(execute, code, timeout, **kw)

    def close(self) -> None:
        self._ex.shutdown(wait=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# --------------------------------------------------------------------------
# Launcher side: runs in the fresh interpreter, before the user's program.
# --------------------------------------------------------------------------

_CLONE_NEWNS = 0x00020000
_CLONE_NEWNET = 0x40000000
_MS_RDONLY, _MS_REMOUNT, _MS_BIND, _MS_REC, _MS_PRIVATE = 1, 32, 4096, 16384, 1 << 18
_PR_SET_PDEATHSIG = 1


def _expose(libc, path: str, work: str) -> None:
    """Make ``path`` reachable for the unprivileged uid without opening its
    ancestors: the first ancestor others cannot traverse (e.g. a 0700 /root
    holding a pyenv Python) is covered by an empty tmpfs and only ``path`` is
    bind-mounted back into it.  Everything else in that ancestor (dotfiles,
    keys) becomes invisible to the program.  Runs inside the private mount
    namespace, so the host never sees it."""
    parts = os.path.abspath(path).split(os.sep)[1:]
    blocked = None
    for i in range(1, len(parts) + 1):
        d = os.sep + os.sep.join(parts[:i])
        if not os.stat(d).st_mode & stat.S_IXOTH:
            blocked = d
            break
    if blocked is None:
        return
    stage = os.path.join(work, ".stage")
    os.mkdir(stage)
    src, stg, blk = path.encode(), stage.encode(), blocked.encode()
    if libc.mount(src, stg, None, _MS_BIND | _MS_REC, None) != 0:
        raise OSError(ctypes.get_errno(), f"sandbox: cannot stage {path}")
    if libc.mount(b"tmpfs", blk, b"tmpfs", 0, b"mode=0755,size=1m") != 0:
        raise OSError(ctypes.get_errno(), f"sandbox: cannot cover {blocked}")
    os.makedirs(path, exist_ok=True)
    if libc.mount(stg, src, None, _MS_BIND | _MS_REC, None) != 0:
        raise OSError(ctypes.get_errno(), f"sandbox: cannot expose {path}")
    libc.umount2(stg, 2)   # MNT_DETACH
    os.rmdir(stage)


def _launcher_isolate(cfg: dict) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                           ctypes.c_ulong, ctypes.c_char_p]
    work = cfg["workdir"]
    uid = cfg["uid"]
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (cfg["cpu"], cfg["cpu"] + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (cfg["fsize"], cfg["fsize"]))
    if uid is not None:
        if libc.unshare(_CLONE_NEWNS | _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "sandbox: unshare(NEWNS|NEWNET) failed")
        if libc.mount(b"none", b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
            raise OSError(ctypes.get_errno(), "sandbox: making mounts private failed")
        wb = work.encode()
        if libc.mount(wb, wb, None, _MS_BIND, None) != 0:
            raise OSError(ctypes.get_errno(), "sandbox: bind-mounting workdir failed")
        for needed in {sys.base_prefix, sys.prefix, os.path.dirname(os.path.abspath(__file__))}:
            _expose(libc, needed, work)
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
        for mp in points:
            if mp == work:
                continue
            # remount read-only; a few special mounts refuse, which is harmless
            libc.mount(None, mp.encode().decode("unicode_escape").encode(), None,
                       _MS_BIND | _MS_REMOUNT | _MS_RDONLY, None)
        os.chown(work, uid, uid)
        os.chown(os.path.join(work, "main.py"), uid, uid)
        resource.setrlimit(resource.RLIMIT_NPROC, (cfg["nproc"], cfg["nproc"]))
        os.setgroups([])
        os.setgid(uid)
        os.setuid(uid)
    else:
        # not root: try an unprivileged user+net namespace for "no network"
        libc.unshare(0x10000000 | _CLONE_NEWNET)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    # RLIMIT_AS last: the steps above need little memory but must not fail on it.
    resource.setrlimit(resource.RLIMIT_AS, (cfg["mem"], cfg["mem"]))


def _launcher_audit(work: str) -> None:
    """Refuse sockets and writes outside ``work`` from Python code."""
    work_real = os.path.realpath(work)

    def inside(path) -> bool:
        try:
            p = os.fsdecode(path) if not isinstance(path, int) else None
        except Exception:
            return False
        if p is None:
            return True     # an already-open fd
        full = os.path.realpath(os.path.join(work_real, p))
        return full == work_real or full.startswith(work_real + os.sep)

    def hook(event, args):
        if event.startswith("socket.") and event not in ("socket.gethostname",):
            raise PermissionError("sandbox: network access is not allowed")
        if event == "open":
            path, mode, flags = args
            writing = (mode is not None and any(c in str(mode) for c in "wax+")) or \
                (flags is not None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT))
            if writing and path is not None and not inside(path):
                raise PermissionError(f"sandbox: writing outside the work dir: {path}")
        elif event in ("os.remove", "os.rmdir", "os.mkdir", "os.rename", "os.chmod",
                       "os.truncate", "os.symlink", "os.link", "shutil.rmtree"):
            for a in args[:2]:
                if isinstance(a, (str, bytes, os.PathLike)) and not inside(a):
                    raise PermissionError(f"sandbox: {event} outside the work dir: {a}")

    sys.addaudithook(hook)


def _launcher_main(argv: list[str]) -> int:
    cfg = json.loads(argv[1])
    _launcher_isolate(cfg)
    work = cfg["workdir"]
    os.chdir(work)
    _launcher_audit(work)
    with open("main.py", encoding="utf-8") as f:
        src = f.read()
    sys.argv = ["main.py"]
    sys.path.insert(0, work)
    glb = {"__name__": "__main__", "__file__": "main.py", "__builtins__": __builtins__}
    try:
        exec(compile(src, "main.py", "exec"), glb)
    except SystemExit:
        raise
    except BaseException:
        etype, val, tb = sys.exc_info()
        # drop the launcher's own frame so the traceback shows only the program
        traceback.print_exception(etype, val, tb.tb_next if tb is not None else tb)
        return 1
    return 0


if __name__ == "__main__":
    sys.stdout.flush()
    sys.exit(_launcher_main(sys.argv))
