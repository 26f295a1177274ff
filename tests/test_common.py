"""common.py: atomic model files, loading errors, the run folder, errors from threads."""
import os
import subprocess
import sys

import pytest
import torch

import common
from conftest import ROOT


def test_save_model_is_atomic_and_loads_back(tmp_path):
    path = tmp_path / "model.pt"
    common.save_model(str(path), "actor_critic", "CartPole-v1", {"obs_dim": 4}, {"w": torch.ones(2)}, {"seed": 3})
    first = common.load_model(str(path), "actor_critic")
    assert first["env_id"] == "CartPole-v1" and torch.equal(first["state_dict"]["w"], torch.ones(2))
    assert first["hyperparams"] == {"seed": 3}
    # a save that fails half-way leaves the previous file intact and no temporary file behind
    with pytest.raises(Exception):
        common.save_model(str(path), "actor_critic", "CartPole-v1", {"bad": lambda: None}, {"w": torch.zeros(2)})
    assert torch.equal(common.load_model(str(path), "actor_critic")["state_dict"]["w"], torch.ones(2))
    assert os.listdir(tmp_path) == ["model.pt"]
    # a run folder works as well as the file inside it
    assert common.load_model(str(tmp_path), "actor_critic")["env_id"] == "CartPole-v1"


def test_load_model_rejects_other_algorithms_and_junk(tmp_path):
    path = tmp_path / "model.pt"
    common.save_model(str(path), "sac", "Pendulum-v1", {}, {})
    with pytest.raises(common.UsageError, match="saved by sac.py"):
        common.load_model(str(path), "actor_critic")
    path.write_bytes(b"\x00garbage")
    with pytest.raises(common.UsageError, match="not a model"):
        common.load_model(str(path), "actor_critic")
    with pytest.raises(common.UsageError, match="no such file"):
        common.load_model(str(tmp_path / "missing.pt"), "actor_critic")


def test_make_env_errors_are_usage_errors():
    with pytest.raises(common.UsageError, match="unknown environment"):
        common.make_env("NoSuchEnv-v0", True)
    with pytest.raises(common.UsageError, match="Discrete action space"):
        common.make_env("Pendulum-v1", True)
    env = common.make_env("CartPole-v1", True)
    assert env.action_space.n == 2
    env.close()


THREAD_ERROR = """
import sys, threading
sys.path.insert(0, {root!r})
import common
def main(argv):   # a student's main with a thread of its own that fails
    def work():
        raise OSError(28, "No space left on device", "/data/results.npz")
    thread = threading.Thread(target=work)
    thread.start()
    thread.join()
common.run_cli(main, [])
"""


def test_an_os_error_in_a_thread_of_ones_own_is_not_silenced():
    """run_cli keeps quiet only about TensorBoard's writer thread (whose OSError the writer reports again)."""
    proc = subprocess.run([sys.executable, "-c", THREAD_ERROR.format(root=ROOT)], capture_output=True, text=True,
                          timeout=60)
    assert "No space left on device" in proc.stderr and "Traceback" in proc.stderr, proc.stderr


def test_help_prints_a_default_of_zero_and_leaves_out_none_and_off(capsys):
    import dataclasses

    @dataclasses.dataclass
    class Args(common.RunArgs):
        env_id: str = "CartPole-v1"
        coef: float = common.hp(0.0, "a coefficient", post=0.5)

    with pytest.raises(SystemExit):
        common.parse_args(Args, "", ["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "a coefficient (default: 0.0; post: 0.5)" in out          # 0 is a default, not "none"
    assert "--load LOAD evaluate a saved model.pt (or its run folder) instead of training --" in out   # no default
    assert "--render watch evaluation episodes in a window (after training, or with --load) --" in out
