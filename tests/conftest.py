"""Shared test helpers: run a script as a user would, with no display; find processes it left behind."""
import glob
import os
import subprocess
import sys
import time
import uuid

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def run_script(script, *args, timeout=120, env=None):
    """Run ``python script args...`` from the repo root; returns the CompletedProcess (text output)."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=full_env)


def _as_from_a_terminal():
    """Ctrl-C reaches a program started from a terminal with SIGINT at its default, even when pytest itself was started
    in the background by a shell without job control (which starts it with SIGINT ignored, and children inherit)."""
    import signal
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_script(script, *args):
    """Start ``python script args...`` in its own process group, with a unique marker in its environment (see
    ``assert_no_process_left``). Returns (Popen with text pipes, marker)."""
    marker = uuid.uuid4().hex
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["A3C_TEST_MARKER"] = marker
    proc = subprocess.Popen([sys.executable, os.path.join(ROOT, script), *map(str, args)], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=_as_from_a_terminal)
    return proc, marker


def wait_for_training(proc):
    """Read stdout until the first progress line: training has really started."""
    for line in proc.stdout:
        if line.startswith("# of episode"):
            return
    raise AssertionError("the script ended before training started: " + proc.stderr.read())


def processes_with(marker):
    found = []
    for environ in glob.glob("/proc/[0-9]*/environ"):
        try:
            with open(environ, "rb") as f:
                if f"A3C_TEST_MARKER={marker}".encode() in f.read():
                    found.append(int(environ.split("/")[2]))
        except OSError:
            pass
    return found


def assert_no_process_left(marker, grace=5.0):
    if not sys.platform.startswith("linux"):
        return
    deadline = time.time() + grace
    while processes_with(marker) and time.time() < deadline:
        time.sleep(0.1)
    assert processes_with(marker) == []


def assert_one_line_error(proc, *fragments):
    """Non-zero exit, exactly one line on stderr containing every fragment, no traceback."""
    assert proc.returncode != 0, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def parse(module, *argv):
    """The script's Args from a command line, as its main() gets them."""
    import common
    return common.parse_args(module.Args, module.__doc__, [str(a) for a in argv])


@pytest.fixture
def script():
    return run_script
