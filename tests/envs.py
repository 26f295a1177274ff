"""Tiny environments for the tests, registered on import; a script reaches them as --env-id tests.envs:<Id>."""
import gymnasium as gym
import numpy as np


class CounterEnv(gym.Env):
    """obs = [t]; reward 1; terminates at t == ``terminate_at`` (if given); the time limit truncates the rest."""
    observation_space = gym.spaces.Box(0.0, 10.0, (1,), np.float32)
    action_space = gym.spaces.Discrete(2)

    def __init__(self, terminate_at=None, render_mode=None):
        self.terminate_at, self.render_mode = terminate_at, render_mode

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        return np.array([self.t], np.float32), 1.0, self.t == self.terminate_at, False, {}


class NanRewardEnv(CounterEnv):
    """A CartPole-sized env whose reward turns into nan after 300 steps: training must stop, not save garbage."""
    observation_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    action_space = gym.spaces.Discrete(2)
    steps = 0

    def reset(self, *, seed=None, options=None):
        return np.zeros(4, np.float32), super().reset(seed=seed)[1]

    def step(self, action):
        NanRewardEnv.steps += 1
        obs, r, *rest = super().step(action)
        return np.full(4, obs[0] / 20, np.float32), float("nan") if NanRewardEnv.steps > 300 else r, *rest


class NanRewardBoxEnv(NanRewardEnv):
    action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)


class CrashEnv(NanRewardEnv):
    """Raises after 300 steps in a process: an A3C worker that crashes."""

    def step(self, action):
        if NanRewardEnv.steps >= 300:
            raise RuntimeError("the env crashed at step 300")
        return super().step(action)


class NoArgsEnv(CounterEnv):
    """A coursework-style env whose constructor takes no arguments at all (no render_mode)."""

    def __init__(self):
        super().__init__(terminate_at=5)


class ContextualBanditEnv(gym.Env):
    """Each step shows one of 5 arms (one-hot); choosing that arm pays 1 at once, any other arm 0. An episode is 25
    such rounds and then terminates. Random play scores 5 per episode, the best policy 25: no credit to carry over
    time, only a reward to follow at once (where a large γ·V(s') or an entropy bonus can drown it)."""
    observation_space = gym.spaces.Box(0.0, 1.0, (5,), np.float32)
    action_space = gym.spaces.Discrete(5)

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def _show(self):
        self.arm = int(self.np_random.integers(5))
        return np.eye(5, dtype=np.float32)[self.arm]

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._show(), {}

    def step(self, action):
        reward, self.t = float(action == self.arm), self.t + 1
        return self._show(), reward, self.t == 25, False, {}


class TinyBoxEnv(gym.Env):
    """A 2-D action box of ±0.05 per dimension; reward −Σ((a − a*)/0.05)², a* = (0.03, −0.02); 3 random observations."""
    observation_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    action_space = gym.spaces.Box(-0.05, 0.05, (2,), np.float32)
    target = np.array([0.03, -0.02])

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), {}

    def step(self, action):
        reward = -float(np.sum(((np.asarray(action) - self.target) / 0.05) ** 2))
        return self.np_random.uniform(-1, 1, 3).astype(np.float32), reward, False, False, {}


gym.register("TestCounter-v0", entry_point=CounterEnv, max_episode_steps=3)
gym.register("TestNanReward-v0", entry_point=NanRewardEnv, max_episode_steps=20)
gym.register("TestNanRewardBox-v0", entry_point=NanRewardBoxEnv, max_episode_steps=20)
gym.register("TestCrash-v0", entry_point=CrashEnv, max_episode_steps=20)
gym.register("TestNoArgs-v0", entry_point=NoArgsEnv, max_episode_steps=50)
gym.register("TestFrozenLake-v0", entry_point="gymnasium.envs.toy_text.frozen_lake:FrozenLakeEnv",
             kwargs=dict(is_slippery=False), max_episode_steps=50)
gym.register("ContextualBandit-v0", entry_point=ContextualBanditEnv)
gym.register("TinyBox-v0", entry_point=TinyBoxEnv, max_episode_steps=20)
