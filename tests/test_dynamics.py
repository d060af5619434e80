"""What both dynamics share (dreamer_jax/dynamics.py): unrolling the time scans changes the loop, not the maths."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from dreamer_jax import config as C
from dreamer_jax.agent import make_dynamics

ACT, EMBED, B, T, H = 5, 12, 3, 7, 5


def _observe_and_imagine(config):
    """Posterior states over a random sequence and the states imagined from its last one, for `config`'s dynamics
    (the parameters depend only on the seed, not on `scan_unroll`), and the program's jaxpr."""
    dynamics = make_dynamics(config, ACT, EMBED, nnx.Rngs(params=0))
    graphdef, params = nnx.split(dynamics)
    keys = jax.random.split(jax.random.PRNGKey(1), 5)
    embed = jax.random.normal(keys[0], (B, T, EMBED))
    action = jax.nn.one_hot(jax.random.randint(keys[1], (B, T), 0, ACT), ACT)
    is_first = jnp.zeros((B, T), bool).at[:, 0].set(True).at[0, 4].set(True)
    policy = lambda feat, key: jax.nn.one_hot(jax.random.randint(key, feat.shape[:1], 0, ACT), ACT)  # noqa: E731

    @jax.jit
    def run(params):
        model = nnx.merge(graphdef, params)
        _, post, _ = model.observe(model.initial(B), embed, action, is_first, keys[2])
        start = jax.tree.map(lambda x: x[:, -1], post)
        return post, model.imagine(start, policy, H, keys[3])

    return run(params), str(jax.make_jaxpr(run)(params))


@pytest.mark.parametrize("dynamics", ["rssm", "vta"])
def test_unrolled_scans_give_the_same_states(dynamics):
    config = C.make("debug", dynamics=dynamics, precision="fp32")
    plain, program = _observe_and_imagine(config)
    unrolled, unrolled_program = _observe_and_imagine(C.make(base=config, scan_unroll=3))  # divides neither T nor H
    assert program.count("unroll=1") == unrolled_program.count("unroll=3") == 2  # observe, imagine
    for a, b in zip(jax.tree.leaves(plain), jax.tree.leaves(unrolled), strict=True):
        np.testing.assert_allclose(np.asarray(a, np.float32), np.asarray(b, np.float32), rtol=1e-5, atol=1e-5)
