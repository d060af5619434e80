"""VTA's abstract level as a model (dreamer_jax/hierarchy.py): segment targets and the mixed critic target against
hand-worked examples."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest
from flax import nnx

from conftest import run_main
from dreamer_jax import config as C, hierarchy
from dreamer_jax.agent import Agent, imagination_loss, mixed_target, replay_loss, world_model_loss
from dreamer_jax.returns import percentile_init
from dreamer_jax.boundaries import analysis
from dreamer_jax.networks import Head
from experiments import plot, train as train_cli
from experiments.envs import make_env


def test_segment_targets_of_a_hand_built_sequence():
    read = jnp.array([[1, 0, 0, 1, 0, 1, 0, 0]], jnp.float32)
    reward = jnp.array([[0, 1, 2, 3, 4, 5, 6, 7]], jnp.float32)
    disc = jnp.array([[1, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3]], jnp.float32)
    out = {k: np.asarray(v)[0] for k, v in hierarchy.segment_targets(read, reward, disc).items()}
    valid = out["valid"]
    assert valid.tolist() == [True] * 5 + [False] * 3  # after the READ at 5 no READ follows in the sequence
    assert out["next"][valid].tolist() == [3, 3, 3, 5, 5]
    assert out["length"][valid].tolist() == [3, 2, 1, 2, 1]
    # t = 0: r1 + d1 r2 + d1 d2 r3 = 1 + 0.9 * 2 + 0.9 * 0.8 * 3; t = 3: r4 + d4 r5 = 4 + 0.6 * 5
    np.testing.assert_allclose(out["reward"][valid], [4.96, 2 + 0.8 * 3, 3, 7, 5], rtol=1e-6)
    np.testing.assert_allclose(out["disc"][valid], [0.9 * 0.8 * 0.7, 0.8 * 0.7, 0.7, 0.6 * 0.5, 0.5], rtol=1e-6)


def test_segment_targets_bootstrap_as_the_lambda_zero_return_does_for_one_step_segments():
    """Where every step is a READ, each segment is one step: reward[t + 1] and disc[t + 1], next t + 1."""
    rng = np.random.default_rng(0)
    reward, disc = (jnp.asarray(rng.random((3, 6)), jnp.float32) for _ in range(2))
    out = hierarchy.segment_targets(jnp.ones((3, 6)), reward, disc)
    np.testing.assert_array_equal(out["reward"][:, :-1], reward[:, 1:])
    np.testing.assert_array_equal(out["disc"][:, :-1], disc[:, 1:])
    assert out["next"][:, :-1].tolist() == [list(range(1, 6))] * 3 and not out["valid"][:, -1].any()


def test_the_mixed_return_is_thick_dreamers_target_and_psi_one_is_the_flat_return():
    ret = jnp.array([10.0, -1.0])
    mixed = hierarchy.mixed_return(ret, jnp.array([4.96, 0.5]), jnp.array([0.504, 0.9]), jnp.array([2.0, 3.0]), 0.9)
    np.testing.assert_allclose(mixed, [0.9 * 10 + 0.1 * (4.96 + 0.504 * 2), 0.9 * -1 + 0.1 * (0.5 + 0.9 * 3)],
                               rtol=1e-6)
    assert hierarchy.mixed_return(ret, ret * np.nan, ret, ret, 1.0) is ret  # psi 1: today's target, untouched
    assert hierarchy.mixed_return(ret, 0 * ret, 0 * ret, ret, 0.0).tolist() == pytest.approx([0.0, 0.0])


def test_training_targets_end_where_the_next_read_takes_its_inputs_and_never_across_episodes():
    read = jnp.array([[1, 0, 1, 0, 0, 1, 0, 1]], jnp.float32)
    is_first = jnp.array([[1, 0, 0, 0, 0, 1, 0, 0]], bool)  # a new episode at step 5: its READ ends no segment
    out = hierarchy.training_targets(read, jnp.zeros((1, 8)), jnp.ones((1, 8)), is_first)
    assert np.asarray(out["valid"])[0].tolist() == [True, True, False, False, False, True, True, False]
    assert np.asarray(out["end"])[0, [0, 1, 5, 6]].tolist() == [1, 1, 6, 6]  # the state and action before the READ
    x = jnp.arange(16.0).reshape(2, 8)
    assert hierarchy.at_steps(x, jnp.array([[7] * 8, [0] * 8])).tolist() == [[7.0] * 8, [8.0] * 8]


def _agents(psi_values, **changes):
    """Debug-preset VTA agents, one per psi, built from the same seed."""
    config = lambda psi: C.make("debug", dynamics="vta", vta_value_mix=psi, **changes)  # noqa: E731
    return [(config(psi), Agent(config(psi), 5, nnx.Rngs(params=0))) for psi in psi_values]


def _batch(config, rng):
    shape = (2, 8)
    return {"image": rng.integers(0, 256, (*shape, config.size, config.size, 3), np.uint8),
            "action": rng.integers(0, 5, shape), "reward": rng.random(shape).astype(np.float32),
            "is_first": np.arange(8)[None].repeat(2, 0) == 0, "is_terminal": np.zeros(shape, bool),
            "is_last": np.zeros(shape, bool)}


def test_psi_one_builds_no_abstract_model_and_the_abstract_model_leaves_the_world_model_as_it_was():
    (off_config, off), (on_config, on) = _agents((1.0, 0.9))
    assert off.abstract is None and on.abstract is not None
    off_params, on_params = (dict(nnx.to_flat_state(nnx.state(agent, nnx.Param))) for agent in (off, on))
    common = {path: v for path, v in on_params.items() if path[0] != "abstract"}
    assert common.keys() == off_params.keys() and len(common) < len(on_params)
    for path, value in off_params.items():  # the other modules start exactly as before
        np.testing.assert_array_equal(value[...], common[path][...], err_msg=str(path))
    data = _batch(off_config, np.random.default_rng(0))
    key = jax.random.PRNGKey(1)

    @nnx.jit(static_argnums=1)
    def loss(agent, config):
        return world_model_loss(agent, config, agent.dynamics.initial(2), data, key)

    (off_loss, off_out), (on_loss, on_out) = loss(off, off_config), loss(on, on_config)
    abstract = sum(v for k, v in on_out.metrics.items() if k.startswith("loss_abstract_"))
    assert on_out.metrics["abstract_segments"] > 0
    for name, value in off_out.metrics.items():  # the world model's losses, bit for bit
        np.testing.assert_array_equal(value, on_out.metrics[name], err_msg=name)
    np.testing.assert_allclose(on_loss, off_loss + abstract, rtol=1e-6)


def _term_grads(config, agent, data, key) -> dict:
    """Per parameter (flat path), the gradients of the world-model, imagination and replay losses, each by itself
    (rows 0, 1, 2), as one training update computes them."""
    graphdef, params = nnx.split(agent)
    critic_graphdef, slow = nnx.split(agent.critic)

    def terms(params):
        agent = nnx.merge(graphdef, params)
        slow_critic = nnx.merge(critic_graphdef, slow)
        wm_key, imag_key = jax.random.split(key)
        wm_loss, wm = world_model_loss(agent, config, agent.dynamics.initial(2), data, wm_key)
        imag_loss, (_, ret, _) = imagination_loss(agent, slow_critic, config, wm.post, data["is_terminal"],
                                                  percentile_init(), imag_key)
        rep_loss, _ = replay_loss(agent, slow_critic, config, wm.post, data, ret)
        return jnp.stack([wm_loss, imag_loss, rep_loss])

    jacobian = jax.jit(jax.jacrev(terms))(params)
    return {path: np.asarray(value[...]) for path, value in nnx.to_flat_state(jacobian)}


def _critic(config, agent, seed):
    """A critic whose values are not all zero (a fresh one's output layer is), as a trained critic's."""
    return Head(agent.dynamics.features(agent.dynamics.initial(1).state).shape[-1], config.bins, config.units,
                config.mlp_layers, dtype=jnp.float32, rngs=nnx.Rngs(params=seed))


@pytest.fixture(scope="module")
def term_grads():
    """`_term_grads` of the same batch at psi 1 (no hierarchy) and psi 0.9, from agents that start alike."""
    agents = _agents((1.0, 0.9))
    for config, agent in agents:
        agent.critic = _critic(config, agent, 8)
    data = _batch(agents[0][0], np.random.default_rng(3))
    return [_term_grads(config, agent, data, jax.random.PRNGKey(4)) for config, agent in agents]


def test_the_hierarchy_changes_only_the_critics_gradient(term_grads):
    """At psi 0.9 the critic's target mixes in the segment values; the world model (the abstract model reads
    stop-gradient states), the actor (its advantages use the flat return) and every other module get the gradients
    they get without the hierarchy. A stop-gradient removed on the way moves one of them."""
    flat, hier = term_grads
    critic = [path for path in flat if path[0] == "critic"]
    assert critic and len(flat) > len(critic)
    for path, grads in flat.items():
        rows = (0, 2) if path[0] == "critic" else (0, 1, 2)  # the critic: its imagination row is the mixed one
        for row in rows:
            np.testing.assert_allclose(hier[path][row], grads[row], rtol=1e-5, atol=1e-8, err_msg=f"{path} {row}")
    moved = [not np.allclose(hier[path][1], flat[path][1], rtol=1e-3) for path in critic]
    assert any(moved)  # the mixed target reaches the critic


def test_the_abstract_model_learns_from_the_world_models_loss_alone(term_grads):
    """Imagination and replay never train the abstract model: to them the critic's target is a constant (stopped in
    `mixed_target`, in the critic's loss and in the two-hot log-likelihood alike)."""
    _, hier = term_grads
    abstract = {path: grads for path, grads in hier.items() if path[0] == "abstract"}
    assert abstract and not any(path[0] == "abstract" for path in term_grads[0])
    assert all(not grads[1:].any() for grads in abstract.values())
    zero_out = lambda path: path[1] == "reward" and path[2] == "mlp"  # noqa: E731  (behind a zero output layer)
    assert [path for path, grads in abstract.items() if not grads[0].any() and not zero_out(path)] == []


def test_the_jump_from_the_training_targets_inputs_is_the_posteriors_next_read():
    """From any state of a segment, the READ transition on the state and action that end it (what the abstract model
    learns to predict) gives the abstract state c and the prior over z of the posterior's next READ (in float32: the
    two compute them in batches of other shapes)."""
    (config, agent), = _agents((0.9,), precision="fp32")
    data = _batch(config, np.random.default_rng(5))
    action = jax.nn.one_hot(data["action"], 5, dtype=jnp.float32)
    _, post, prior = agent.dynamics.observe(agent.dynamics.initial(2), agent.encoder(data["image"]), action,
                                            data["is_first"], jax.random.PRNGKey(6), reward=data["reward"])
    targets = hierarchy.training_targets(post.read, data["reward"], jnp.ones((2, 8)), data["is_first"])
    valid = np.asarray(targets["valid"]).ravel()
    assert valid.sum() >= 4 and (np.asarray(targets["length"]).ravel()[valid] >= 2).any()
    flat = lambda x: x.reshape((-1,) + x.shape[2:])  # noqa: E731
    end, following = targets["end"], targets["next"]
    jumped = agent.dynamics.jump(jax.tree.map(flat, post), flat(hierarchy.at_steps(post.h, end)),
                                 flat(hierarchy.at_steps(post.s, end)), flat(hierarchy.at_steps(action, end)),
                                 jax.random.PRNGKey(7))
    posterior = lambda x: np.asarray(flat(hierarchy.at_steps(x, following)))[valid]  # noqa: E731
    np.testing.assert_allclose(np.asarray(jumped.c)[valid], posterior(post.c), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(jumped.z_logits)[valid], posterior(prior.z_logits), rtol=1e-5, atol=1e-5)


def test_the_mixed_target_values_each_imagined_state_by_its_own_segment():
    """Column j of the target reads imagined state j alone (never the last state, which has no lambda-return)."""
    (config, agent), = _agents((0.9,))
    start = agent.dynamics.initial(3).state
    states, _ = agent.dynamics.imagine(start, agent.sample_action, 4, jax.random.PRNGKey(1))
    ret = jnp.asarray(np.random.default_rng(2).random((3, 4)), jnp.float32)
    critic = _critic(config, agent, 8)

    def target(states):
        return np.asarray(mixed_target(agent, critic, config, states, ret, jax.random.PRNGKey(3))[0])

    base = target(states)
    assert base.shape == (3, 4)
    bump = lambda j: states._replace(h=states.h.at[:, j].add(1.0))  # noqa: E731
    np.testing.assert_array_equal(target(bump(4)), base)  # the last state: no column reads it
    changed = np.abs(target(bump(1)) - base) > 1e-6
    assert changed[:, 1].all() and not changed[:, [0, 2, 3]].any()


@pytest.mark.parametrize("slow_target", [False, True])
def test_the_lambda_returns_and_the_segment_values_read_one_critic(slow_target):
    """In `imagination_loss` the critic that bootstraps the lambda-returns also values the next READ: the online
    one, or the slow one with slow_target. Swapping the slow critic moves both or neither."""
    (config, agent), = _agents((0.9,), slow_target=slow_target)
    data = _batch(config, np.random.default_rng(5))
    action = jax.nn.one_hot(data["action"], 5, dtype=jnp.float32)
    _, post, _ = agent.dynamics.observe(agent.dynamics.initial(2), agent.encoder(data["image"]), action,
                                        data["is_first"], jax.random.PRNGKey(6), reward=data["reward"])
    agent.critic = _critic(config, agent, 8)

    def targets(slow_seed):
        _, (_, ret, m) = imagination_loss(agent, _critic(config, agent, slow_seed), config, post,
                                          jnp.asarray(data["is_terminal"]), percentile_init(), jax.random.PRNGKey(7))
        return np.asarray(ret), float(m["imag_abstract_return"])

    (ret, segment), (ret_other, segment_other) = targets(9), targets(10)
    assert np.array_equal(ret, ret_other) != slow_target
    assert (segment == segment_other) != slow_target


def test_a_jumpy_rollout_chains_segments_under_jit_without_observations():
    (config, agent), = _agents((0.9,))
    start = agent.dynamics.initial(3).state

    @nnx.jit(static_argnums=2)
    def rollout(dynamics, model, segments, key):
        return hierarchy.jumpy_rollout(dynamics, model, start, segments, key)

    states, lengths, rewards, discounts = rollout(agent.dynamics, agent.abstract, 4, jax.random.PRNGKey(0))
    assert lengths.shape == rewards.shape == discounts.shape == (3, 4) and states.h.shape == (3, 4, config.deter)
    assert bool(((lengths >= 1) & (lengths <= config.vta_max_seg_len)).all())
    assert bool((states.read == 1).all()) and bool((states.seg_len == 1).all())
    assert states.seg_num[:, -1].tolist() == [4, 4, 4]  # one READ per segment
    assert bool(((discounts > 0) & (discounts < 1)).all()) and bool(jnp.isfinite(states.h).all())


@pytest.fixture(scope="module")
def hier_run(tmp_path_factory):
    """A debug-preset VTA run with the hierarchy, trained by the CLI to 128 env steps (checkpoints at 64 and 128)."""
    logdir = tmp_path_factory.mktemp("hier") / "run"
    assert train_cli.main(["--configs", "debug", "--dynamics", "vta", "--vta_value_mix", "0.9", "--steps", "128",
                           "--eval_every", "0", "--log_every", "32", "--save_every", "64", "--logdir",
                           str(logdir)]) == 0
    return logdir


def test_an_agent_with_the_hierarchy_trains_its_abstract_model_and_mixes_the_critic_target(hier_run):
    lines = [json.loads(line) for line in (hier_run / "metrics.jsonl").read_text().splitlines()]
    last = lines[-1]
    assert last["step"] == 128 and last["skipped_updates"] == 0
    assert last["abstract_segments"] > 0 and 0 <= last["abstract_next_z_match"] <= 1
    assert 0 <= last["abstract_next_z_carry"] <= 1
    assert all(np.isfinite(last[k]) for k in ("imag_abstract_return", "loss_abstract_length", "loss_critic"))
    env = make_env(C.load(hier_run / "config.json"))
    early, late = (analysis.load_run(hier_run, env, step) for step in (64, 128))
    moved = [not np.array_equal(a, b) for a, b in zip(*(jax.tree.leaves(nnx.state(
        nnx.merge(run.learner.graphdef, run.params).abstract, nnx.Param)) for run in (early, late)))]
    assert any(moved)  # the abstract model learns


def test_the_jumpy_figure_scores_predicted_reads_against_the_posteriors(hier_run, tmp_path, capsys):
    code, out, err = run_main(plot.main, ["--logdir", hier_run, "--jumpy", "3", "--out", tmp_path / "curves.png"],
                              capsys)
    assert code == 0, err
    result = json.loads((tmp_path / "jumpy.json").read_text())
    predicted, actual = np.array(result["predicted"]), np.array(result["actual"])
    assert predicted.shape == actual.shape == (plot.JUMPY_EPISODES, 3) and result["start"] == 5
    assert (np.diff(predicted, axis=1) >= 1).all() and (predicted > 5).all()  # each segment at least one step
    for k, error in enumerate(result["mean_abs_error"]):
        defined = actual[:, k] >= 0
        assert (error is None) == (not defined.any())
        if defined.any():
            assert error == pytest.approx(np.abs(predicted[defined, k] - actual[defined, k]).mean())
    assert matplotlib.image.imread(tmp_path / "jumpy.png").ndim == 3 and "jumpy:" in out


def test_the_next_latents_match_is_scored_beside_carrying_the_latent_over():
    """Two latents of three classes at three states, the last not valid: the prediction gets 2 of 2 and 1 of 2 right
    (0.75), the states' own latents 1 of 2 and 0 of 2 (0.25); the invalid state counts for neither."""
    one_hot = lambda classes: jax.nn.one_hot(jnp.array(classes), 3)  # noqa: E731
    actual = one_hot([[0, 1], [2, 2], [1, 1]])
    predicted = 5.0 * one_hot([[0, 1], [2, 0], [0, 0]])
    current = one_hot([[0, 2], [1, 0], [1, 1]])
    match, carry = hierarchy.next_z_shares(predicted, current, actual, jnp.array([True, True, False]))
    assert (float(match), float(carry)) == (0.75, 0.25)


def test_next_reads_lists_the_posteriors_reads_after_the_start():
    read = np.array([[1, 0, 1, 0, 0, 1, 1, 0], [1, 0, 0, 0, 0, 0, 0, 1]], bool)
    assert hierarchy.next_reads(read, np.array([2, 0]), 3).tolist() == [[5, 6, -1], [7, -1, -1]]
    errors = hierarchy.read_errors(np.array([[4, 9, 12], [8, 10, 11]]), np.array([[5, 6, -1], [7, -1, -1]]))
    assert errors == [1.0, 3.0, None]  # |4 - 5| and |8 - 7|; |9 - 6| alone; no third READ


@pytest.mark.parametrize("flags, message", [(["--jumpy", "3"], "has no abstract model"),
                                            (["--jumpy", "-1"], "--jumpy -1 must be 0")])
def test_a_run_without_the_hierarchy_is_refused_for_jumps(hier_run, tmp_path, capsys, flags, message):
    (tmp_path / "flat").mkdir()
    saved = json.loads((hier_run / "config.json").read_text()) | {"vta_value_mix": 1.0}
    (tmp_path / "flat" / "config.json").write_text(json.dumps(saved))
    code, _, err = run_main(plot.main, ["--logdir", tmp_path / "flat", *flags], capsys)
    assert code == 2 and message in err
