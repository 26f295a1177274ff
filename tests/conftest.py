"""Shared test helpers: run a script as a user would, with no display and one torch thread."""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def run_script(script, *args, timeout=120, env=None):
    """Run ``python script args...`` from the repo root; returns the CompletedProcess (text output)."""
    full_env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    full_env.update(env or {})
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout, env=full_env)


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
