"""The scripts in a real Jupyter kernel, as a notebook user meets them: the script pasted into a cell (with common.py
in the notebook's folder), `%run script.py args`, `main([...])` after pasting its definitions, the interrupt button
during training, and bad input. Each time: no traceback, no SystemExit, and the kernel lives on with its own argv,
signal handlers and excepthook. One kernel per script, its cells run one after another."""
import glob
import json
import os
import shutil
import uuid

import pytest
from jupyter_client.manager import start_new_kernel

import a3c
import actor_critic
import common
import sac
from conftest import ROOT, assert_no_process_left, processes_with

MODULES = {"actor_critic.py": actor_critic, "a3c.py": a3c, "sac.py": sac}
TINY = {   # a few hundred env steps: what `%run` and main([...]) train here
    "actor_critic.py": ["--total-timesteps", "400"],
    "a3c.py": ["--total-timesteps", "600", "--num-workers", "2"],
    "sac.py": ["--total-timesteps", "400", "--learning-starts", "200", "--random-steps", "200"],
}
OTHER_ENV = {"actor_critic.py": "Acrobot-v1", "a3c.py": "Acrobot-v1", "sac.py": "MountainCarContinuous-v0"}
STATE = ("(signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), threading.excepthook, "
         "list(sys.argv))")


class Kernel:
    """A Jupyter kernel started in ``folder``; ``cell(code)`` runs one cell as a notebook front end does."""

    def __init__(self, folder, marker):
        env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
        self.km, self.kc = start_new_kernel(kernel_name="python3", cwd=str(folder), env={**env,
                                            "A3C_TEST_MARKER": marker})
        self.folder, self.marker = folder, marker
        self.pid = int(self.cell("import os; print(os.getpid())")["stdout"])

    def cell(self, code, interrupt_on=None, timeout=180):
        """Run ``code``; press the interrupt button once ``interrupt_on`` appears on stdout. Returns the reply
        status, stdout, stderr, and the error's name and traceback text, if any."""
        msg_id, out = self.kc.execute(code), {"stdout": "", "stderr": "", "ename": None, "traceback": ""}
        while True:
            msg = self.kc.get_iopub_msg(timeout=timeout)
            if msg["parent_header"].get("msg_id") != msg_id:
                continue
            kind, content = msg["msg_type"], msg["content"]
            if kind == "stream":
                out[content["name"]] += content["text"]
                if interrupt_on and interrupt_on in out["stdout"]:
                    self.km.interrupt_kernel()
                    interrupt_on = None
            elif kind == "error":
                out["ename"], out["traceback"] = content["ename"], "\n".join(content["traceback"])
            elif kind == "status" and content["execution_state"] == "idle":
                break
        while (reply := self.kc.get_shell_msg(timeout=timeout))["parent_header"].get("msg_id") != msg_id:
            pass
        out["status"] = reply["content"]["status"]
        return out

    def assert_clean(self, out):
        """A cell that ended without an error, a traceback or a SystemExit."""
        assert out["status"] == "ok" and out["ename"] is None, out
        assert "Traceback" not in out["stdout"] + out["stderr"] and "SystemExit" not in out["stderr"], out

    def assert_as_before(self):
        """The kernel's own sys.argv, SIGINT/SIGTERM handlers and threading.excepthook are back."""
        self.assert_clean(self.cell(f"assert {STATE} == _before, ({STATE}, _before)"))

    def config(self, logdir):
        (path,) = glob.glob(os.path.join(self.folder, logdir, "*", "config.json"))
        return json.load(open(path))


@pytest.fixture(scope="module", params=sorted(MODULES))
def nb(request, tmp_path_factory):
    script, marker = request.param, uuid.uuid4().hex
    folder = tmp_path_factory.mktemp(script.replace(".py", ""))
    for name in ("common.py", script):          # what the README says to put next to the notebook
        shutil.copy(os.path.join(ROOT, name), folder)
    kernel = Kernel(folder, marker)
    kernel.script, kernel.module, kernel.source = script, MODULES[script], open(os.path.join(ROOT, script)).read()
    kernel.definitions, main_block = kernel.source.split('\nif __name__ == "__main__":')   # the script but its end
    assert main_block.strip() == "main()"
    kernel.assert_clean(kernel.cell(f"import signal, sys, threading\n_before = {STATE}\n"
                                    "assert _before[0] is signal.default_int_handler and '-f' in sys.argv"))
    yield kernel
    kernel.kc.stop_channels()
    kernel.km.shutdown_kernel()
    assert_no_process_left(marker)


def test_run_magic_takes_the_scripts_arguments(nb):
    flags = " ".join(["--env-id", OTHER_ENV[nb.script], "--seed", "3", "--logdir", "magic", *TINY[nb.script]])
    out = nb.cell(f"%run {nb.script} {flags}")
    nb.assert_clean(out)
    assert "reached --total-timesteps" in out["stdout"] and 'watch it: main(["--load", "magic/' in out["stdout"]
    config = nb.config("magic")
    assert (config["env_id"], config["seed"], config["total_timesteps"]) == (OTHER_ENV[nb.script], 3,
                                                                             int(TINY[nb.script][1]))
    nb.assert_as_before()   # also: importing common under %run (where __main__ has a __file__) set no handler


def test_a_pasted_cell_trains_with_the_defaults_and_the_interrupt_button_saves_the_model(nb):
    out = nb.cell(nb.source, interrupt_on="# of episode")
    nb.assert_clean(out)
    assert "interrupted after" in out["stdout"] and out["stderr"] == "interrupted\n", out
    config, defaults = nb.config("runs"), nb.module.Args()
    assert (config["env_id"], config["total_timesteps"]) == (defaults.env_id, defaults.total_timesteps)
    (model,) = glob.glob(os.path.join(nb.folder, "runs", "*", "model.pt"))
    assert common.load_model(model, nb.script[:-3])["env_id"] == defaults.env_id
    assert processes_with(nb.marker) == [nb.pid]   # a3c.py's workers are gone, the kernel is alive
    nb.assert_as_before()
    sleep = nb.cell("import time\nprint('sleeping')\ntime.sleep(60)", interrupt_on="sleeping")
    assert sleep["status"] == "error" and sleep["ename"] == "KeyboardInterrupt"   # the kernel's own Ctrl-C again
    nb.assert_clean(nb.cell("print(1 + 1)"))


def test_main_takes_a_list_of_arguments_after_pasting_the_definitions(nb):
    nb.assert_clean(nb.cell(nb.definitions))
    out = nb.cell(f"main({['--seed', '5', '--logdir', 'listed', *TINY[nb.script]]})")
    nb.assert_clean(out)
    assert "reached --total-timesteps" in out["stdout"] and out["stderr"] == ""
    assert (nb.config("listed")["seed"], nb.config("listed")["total_timesteps"]) == (5, int(TINY[nb.script][1]))
    nb.assert_as_before()


def test_train_called_in_a_cell_returns_the_model_and_the_run_also_when_interrupted(nb):
    nb.assert_clean(nb.cell(nb.definitions))
    out = nb.cell("model, run = train(Args(total_timesteps=10**8, keep_training=True, print_interval=1, "
                  "logdir='direct'))", interrupt_on="# of episode")
    nb.assert_clean(out)   # the kernel's own handler raised KeyboardInterrupt in the loop: the run saved and returned
    nb.assert_clean(out := nb.cell("print(run.reason, type(model).__name__, os.path.isfile(run.model_path))"))
    assert out["stdout"].startswith("interrupted ") and out["stdout"].endswith(" True\n"), out
    assert processes_with(nb.marker) == [nb.pid]


BAD_INPUT = [   # the cell, and its one line on stderr
    ('main(["--no-such-flag"])', "main: error: unrecognized arguments: --no-such-flag (see --help)"),
    ('main(["--env-id", "NoSuchEnv-v0"])', "error: unknown environment 'NoSuchEnv-v0'"),
    ("%run {script} --gamma 2", "{script}: error: argument --gamma: must be in [0, 1], got 2"),
]
SPAWN_FROM_A_CELL = ('main(["--start-method", "spawn"])',   # its workers cannot import a function defined in a cell
                     "error: --start-method spawn needs a3c.py as a file (not a cell): %run a3c.py, or fork")


def test_bad_input_is_one_line_and_the_kernel_lives_on(nb):
    nb.assert_clean(nb.cell(nb.definitions))   # main as pasted
    for code, fragment in ([SPAWN_FROM_A_CELL] if nb.script == "a3c.py" else []) + BAD_INPUT:
        out = nb.cell(code.format(script=nb.script))
        nb.assert_clean(out)
        assert out["stdout"] == "" and out["stderr"].count("\n") == 1, out
        assert fragment.format(script=nb.script) in out["stderr"], out
        nb.assert_as_before()
