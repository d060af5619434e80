"""Scale: several seeds in one process (vmap) and data parallelism over devices (jax.sharding), on the CPU."""

import contextlib
import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import REPO, run_main
from dreamer_jax import run as run_lib
from experiments import train as train_cli
from test_train_cli import lines, train

TINY = ["--configs", "debug", "--steps", "96", "--eval_every", "64", "--log_every", "32"]
RATES = set(run_lib.TIMING)


def assert_same_metrics(a, b, rtol):
    """Two metrics logs agree line by line: counts exactly, float metrics within `rtol`."""
    assert [line["step"] for line in a] == [line["step"] for line in b]
    for x, y in zip(a, b):
        assert set(x) == set(y)
        for key in set(x) - RATES:
            if isinstance(x[key], float):
                np.testing.assert_allclose(x[key], y[key], rtol=rtol, atol=1e-6, err_msg=f"{key} at {x['step']}")
            else:
                assert x[key] == y[key], (key, x["step"])


@pytest.fixture(scope="module")
def seeds(tmp_path_factory):
    """Seeds 3 and 4 trained together in one process, and each alone."""
    root, together = tmp_path_factory.mktemp("seeds"), io.StringIO()
    # In this process, so the group's resume below and the second seed alone trace and compile nothing again.
    with contextlib.redirect_stdout(together):
        assert train_cli.main([*TINY, "--seed", "3", "--num_seeds", "2", "--logdir",
                               str(root / "group_seed{seed}")]) == 0
    for seed in (3, 4):
        assert train_cli.main([*TINY, "--seed", str(seed), "--logdir", str(root / f"alone_seed{seed}")]) == 0
    return root, together.getvalue()


def test_seeds_in_one_process_match_separate_runs(seeds):
    root, together = seeds
    for seed in (3, 4):
        group, alone = root / f"group_seed{seed}", root / f"alone_seed{seed}"
        assert f"metrics: {group / 'metrics.jsonl'}" in together
        assert_same_metrics(lines(group), lines(alone), rtol=1e-6)
        saved = {p: json.loads((p / "config.json").read_text()) for p in (group, alone)}
        assert saved[group].pop("logdir") == str(group) and saved[alone].pop("logdir") == str(alone)
        assert saved[group] == saved[alone] and saved[group]["seed"] == seed and saved[group]["num_seeds"] == 1
        assert sorted(p.name for p in (group / "checkpoints").iterdir()) == ["96"]
    # Different seeds are different agents.
    assert lines(root / "group_seed3")[-1]["loss_rec"] != lines(root / "group_seed4")[-1]["loss_rec"]


def test_a_seed_group_resumes_from_its_checkpoints(seeds, tmp_path):
    root, _ = seeds
    for seed in (3, 4):
        subprocess.run(["cp", "-r", str(root / f"group_seed{seed}"), str(tmp_path / f"group_seed{seed}")], check=True)
    assert train_cli.main([*TINY[:2], "--steps", "128", "--eval_every", "64", "--log_every", "32", "--seed", "3",
                           "--num_seeds", "2", "--logdir", str(tmp_path / "group_seed{seed}")]) == 0
    for seed in (3, 4):
        log = lines(tmp_path / f"group_seed{seed}")
        assert [line["step"] for line in log] == [32, 64, 96, 128] and log[-1]["updates"] == 32


@pytest.mark.parametrize("args, message", [
    (["--num_seeds", "2", "--logdir", "{root}/group"], "must contain {seed}"),
    (["--devices", "3", "--logdir", "{root}/run"], "must divide --batch_size=2"),
    (["--devices", "2", "--logdir", "{root}/run"], "only 1 cpu device(s) are visible"),
    (["--distributed", "True", "--logdir", "{root}/run"], "could not join a multi-host job"),
])
def test_bad_scale_settings_are_clear_errors_before_any_work(tmp_path, capsys, args, message):
    args = [*TINY, *(a.replace("{root}", str(tmp_path)) for a in args)]
    if "--distributed" in args:  # it would join this test process to a job: a process of its own
        result = train(*args, check=False)
        code, err = result.returncode, result.stderr
        assert "Traceback" not in err
    else:
        code, _, err = run_main(train_cli.main, args, capsys)
    assert code == 2 and message in err
    assert not list(tmp_path.iterdir())


def _with_devices(count: int) -> dict:
    flags = os.environ.get("XLA_FLAGS", "")
    return {**os.environ, "XLA_FLAGS": f"{flags} --xla_force_host_platform_device_count={count}"}


ONE_UPDATE_ON_FOUR_DEVICES = """
import jax
import numpy as np
from dreamer_jax import config as cfg
from dreamer_jax.run import make_mesh
from dreamer_jax.train import Learner
from experiments.envs import make_env
config = cfg.make("debug", batch_size=4, devices=4, precision="fp32", size=16)
out = []
for mesh in (make_mesh(4), None):
    learner, state = Learner.create(config, make_env(config), jax.random.PRNGKey(0), mesh=mesh)
    state, _ = learner.chunk(state, 40, False)
    if mesh is not None:
        lowered = learner._single.lower(learner, state, True).as_text()
        print("split", len(jax.tree.leaves(state.params)[0].sharding.device_set), lowered.count("sharding_constraint"))
    out.append(jax.device_get(learner.chunk(state, 1, True)))
(sharded, sharded_metrics), (single, single_metrics) = out
for key in single_metrics:
    np.testing.assert_allclose(sharded_metrics[key], single_metrics[key], rtol=1e-5, atol=1e-6, err_msg=key)
for a, b in zip(jax.tree.leaves(sharded.params), jax.tree.leaves(single.params)):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
print("same", len(single_metrics))
"""


def test_one_update_on_four_devices_splits_the_batch_and_matches_one_device_within_float_tolerance():
    """The update on a 4-device mesh replicates the parameters on every device and constrains the batch to be split
    over them; its metrics and parameters equal one device's within float tolerance."""
    result = subprocess.run([sys.executable, "-c", ONE_UPDATE_ON_FOUR_DEVICES], cwd=REPO, capture_output=True,
                            text=True, timeout=600, env=_with_devices(4))
    assert result.returncode == 0, result.stderr[-3000:]
    split, same = (line.split() for line in result.stdout.splitlines()[-2:])
    assert split[0] == "split" and int(split[1]) == 4 and int(split[2]) >= 1
    assert same[0] == "same" and int(same[1]) > 10


def test_accelerator_loop_matches_the_cpu_loop():
    """The loop accelerators run (a chunk is one scan, seeds vmapped), forced on the CPU, trains each of its agents as
    the CPU loop (iterations dispatched one by one) trains that agent alone: the same results within float tolerance,
    and the same env data."""
    import jax
    import jax.numpy as jnp

    from dreamer_jax import config as cfg
    from dreamer_jax.train import Learner
    from experiments.envs import make_env

    # The model of the four-device test's one-device run above (batch 4): the CPU loop's programs come from the compile
    # cache.
    config = cfg.make("debug", batch_size=4, devices=4, precision="fp32", size=16)
    keys = jnp.stack([jax.random.PRNGKey(0), jax.random.PRNGKey(1)])

    def train(key, seeds, fused):
        learner, state = Learner.create(config, make_env(config), key, seeds=seeds, fused=fused)
        assert learner.is_fused == fused
        state, _ = learner.chunk(state, 40, False)
        return jax.device_get(learner.chunk(state, 3, True))

    acc, acc_metrics = train(keys, 2, True)
    for i in range(2):
        cpu, cpu_metrics = train(keys[i], 1, False)
        assert set(cpu_metrics) == set(acc_metrics)
        for key in cpu_metrics:
            assert acc_metrics[key].shape == (2, 3) and cpu_metrics[key].shape == (3,), key
            np.testing.assert_allclose(acc_metrics[key][i], cpu_metrics[key], rtol=1e-5, atol=1e-6, err_msg=key)
        for a, b in zip(jax.tree.leaves(acc.params), jax.tree.leaves(cpu.params), strict=True):
            np.testing.assert_allclose(a[i], b, rtol=1e-5, atol=1e-5)
        for a, b in zip(jax.tree.leaves(acc.replay.steps), jax.tree.leaves(cpu.replay.steps), strict=True):
            np.testing.assert_array_equal(a[i], b)
    assert not np.array_equal(acc.params["actor"]["out"]["kernel"][...][0],
                              acc.params["actor"]["out"]["kernel"][...][1])  # two different agents
