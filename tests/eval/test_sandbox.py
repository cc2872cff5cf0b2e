"""Hostile-program battery for the sandbox.

All programs run concurrently through ``SandboxPool`` (short timeouts keep
the battery fast).  For each: the expected status (stopped or contained),
no file written outside its temp dir (each program aims at a canary path
unique to this test session), no process left under the run's uid, the
temp dir removed, and the evaluator itself still alive and working.
"""

import os
import socket
import uuid

import pytest

from megatron_dsm.eval.sandbox import SandboxLimits, SandboxPool, execute, remaining_processes

TAG = uuid.uuid4().hex[:10]
CANARY_DIRS = ["/tmp", "/var/tmp", "/dev/shm", os.path.dirname(os.path.abspath(__file__))]


def canaries(name):
    return [os.path.join(d, f"dsm_canary_{TAG}_{name}") for d in CANARY_DIRS]


def write_all(name):
    paths = canaries(name)
    return "\n".join(f"open({p!r}, 'w').write('x')" for p in paths)


SECRET = f"dsm-secret-{TAG}"
os.environ["DSM_TEST_SECRET_TOKEN"] = SECRET

# name -> (code, allowed statuses, must-not-appear-in-stdout)
PROGRAMS = {
    "infinite_loop": ("while True:\n    pass", {"timeout", "killed"}, None),
    "sleep_forever": ("import time\ntime.sleep(1000)", {"timeout"}, None),
    "fork_bomb": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
                  {"timeout", "killed", "error"}, None),
    "alloc_10gb": ("x = bytearray(10 * 1024**3)\nprint('allocated')", {"error", "killed"}, "allocated"),
    "alloc_growing": ("l = []\nwhile True:\n    l.append(bytearray(100 * 1024**2))", {"error", "killed", "timeout"}, None),
    "deep_recursion": ("import sys\nsys.setrecursionlimit(10**8)\ndef f(n):\n    return f(n + 1)\nf(0)",
                       {"error", "killed", "timeout"}, None),
    "output_1gb": ("import sys\nb = b'x' * (1 << 20)\nfor _ in range(1024):\n    sys.stdout.buffer.write(b)",
                   {"killed"}, None),
    "stderr_flood": ("import sys\nwhile True:\n    sys.stderr.write('e' * 65536)", {"killed"}, None),
    "socket_connect": ("import socket\ns = socket.socket()\ns.settimeout(1)\ns.connect(('1.1.1.1', 80))\nprint('connected')",
                       {"error"}, "connected"),
    "socket_via_raw_ctypes": ("import ctypes\nlibc = ctypes.CDLL(None)\nfd = libc.socket(2, 1, 0)\n"
                              "import struct\naddr = struct.pack('!HH4s8x', 2, 80, bytes([1,1,1,1]))\n"
                              "addr = struct.pack('H', 2) + addr[2:]\n"
                              "r = libc.connect(fd, addr, 16)\nprint('connected' if r == 0 else 'refused')",
                              {"ok", "error"}, "connected"),
    "dns_lookup": ("import socket\nprint(socket.gethostbyname('example.com'))", {"error"}, "."),
    "urllib": ("import urllib.request\nprint(urllib.request.urlopen('http://example.com', timeout=2).status)",
               {"error"}, "200"),
    "write_outside": (write_all("write_outside") + "\nprint('written')", {"error"}, "written"),
    "write_outside_via_shell": ("import os\n" + "\n".join(f"os.system('echo x > {p}')" for p in canaries("shell")),
                                {"ok", "error"}, None),
    "write_outside_via_os_open": ("import os\n" + "\n".join(
        f"try:\n    fd = os.open({p!r}, os.O_WRONLY | os.O_CREAT)\n    os.write(fd, b'x')\nexcept OSError:\n    pass"
        for p in canaries("osopen")), {"ok", "error"}, None),
    "write_outside_via_ctypes": ("import ctypes\nlibc = ctypes.CDLL(None)\n" + "\n".join(
        f"libc.creat({p.encode()!r}, 0o644)" for p in canaries("ctypes")), {"ok", "error"}, None),
    "symlink_escape": (f"import os\nos.symlink('/tmp', 'escape')\nopen('escape/dsm_canary_{TAG}_symlink', 'w').write('x')",
                       {"error"}, None),
    "delete_outside": ("import os\nos.remove('/etc/hostname')", {"error"}, None),
    "spawn_subprocesses": ("import subprocess\nps = [subprocess.Popen(['sleep', '1000']) for _ in range(5)]\nprint('spawned')",
                           {"ok", "error"}, None),
    "daemonize_escape_group": ("import os, time\nif os.fork() == 0:\n    os.setsid()\n    if os.fork() == 0:\n"
                               "        time.sleep(1000)\n    os._exit(0)\nprint('parent done')", {"ok"}, None),
    "kill_parent": ("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)", {"error"}, None),
    "kill_everything": ("import os, signal\nos.kill(-1, signal.SIGKILL)\nprint('survived')", {"ok", "killed"}, None),
    "kill_init": ("import os, signal\nos.kill(1, signal.SIGKILL)", {"error"}, None),
    "read_env_secret": ("import os\nprint(os.environ.get('DSM_TEST_SECRET_TOKEN', 'none'))\nprint(sorted(os.environ))",
                        {"ok"}, SECRET),
    "read_proc_environ_of_parent": ("import os\nprint(open(f'/proc/{os.getppid()}/environ').read())", {"error", "ok"}, SECRET),
    "read_root_home": ("import os\nprint(os.listdir('/root'))\nprint(open('/root/.bash_history').read())",
                       {"error", "ok"}, None),
    "busy_threads": ("import threading\ndef spin():\n    while True:\n        pass\n"
                     "ts = [threading.Thread(target=spin) for _ in range(8)]\n[t.start() for t in ts]\n[t.join() for t in ts]",
                     {"timeout", "killed"}, None),
    "huge_file_in_workdir": ("with open('big', 'wb') as f:\n    while True:\n        f.write(b'x' * (1 << 20))",
                             {"killed", "error"}, None),
    "ignore_sigterm": ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(1000)", {"timeout"}, None),
    "exit_code": ("import sys\nsys.exit(3)", {"error"}, None),
    "chmod_escape": ("import os\nos.chmod('/tmp', 0o777)", {"error"}, None),
}

TIMEOUT = 2.0
LIMITS = SandboxLimits(memory_mb=1024, max_output_bytes=16 * 1024, max_file_bytes=4 * 1024 * 1024,
                       max_processes=16)


@pytest.fixture(scope="module")
def battery():
    recs = {name: {} for name in PROGRAMS}
    with SandboxPool(workers=8, limits=LIMITS) as pool:
        futs = {name: pool.submit(code, TIMEOUT, _record=recs[name]) for name, (code, _, _) in PROGRAMS.items()}
        results = {name: f.result() for name, f in futs.items()}
    return results, recs


def test_battery_size():
    assert len(PROGRAMS) >= 25


@pytest.mark.parametrize("name", sorted(PROGRAMS))
def test_hostile_program_contained(battery, name):
    results, recs = battery
    res, rec = results[name], recs[name]
    _, allowed, forbidden = PROGRAMS[name]
    assert res.status in allowed, (name, res.status, res.reason, res.stderr[-500:])
    if forbidden is not None:
        assert forbidden not in res.stdout, (name, res.stdout[:300])
    assert res.duration < TIMEOUT + 5
    assert len(res.stdout.encode()) <= LIMITS.max_output_bytes
    assert len(res.stderr.encode()) <= LIMITS.max_output_bytes
    # nothing written outside the temp dir
    for d in CANARY_DIRS:
        leaked = [f for f in os.listdir(d) if f.startswith(f"dsm_canary_{TAG}")]
        assert not leaked, leaked
    # temp dir removed, no process left
    assert not os.path.exists(rec["workdir"])
    if rec.get("uid") is not None:
        assert remaining_processes(rec["uid"]) == []
    # the evaluator survives and still works
    assert execute("print(6 * 7)", timeout=5).stdout.strip() == "42"


def test_normal_programs():
    r = execute("import math\nprint(math.comb(10, 3))")
    assert (r.status, r.stdout) == ("ok", "120\n")
    r = execute("import sympy\nprint(sympy.factor('x**2-1'))")
    assert r.status == "ok" and r.stdout.strip() == "(x - 1)*(x + 1)"
    r = execute("open('f.txt', 'w').write('hi')\nprint(open('f.txt').read())")
    assert r.stdout == "hi\n"
    r = execute("1/0")
    assert r.status == "error" and "ZeroDivisionError" in r.stderr


def test_bad_input():
    with pytest.raises(ValueError, match="timeout"):
        execute("print(1)", timeout=0)
    with pytest.raises(TypeError, match="code must be str"):
        execute(b"print(1)")


def test_pool_throughput_order():
    with SandboxPool(workers=4) as pool:
        out = pool.map([f"print({i} * {i})" for i in range(12)], timeout=10)
    assert [r.stdout.strip() for r in out] == [str(i * i) for i in range(12)]
