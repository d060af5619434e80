"""Train a DreamerV3 agent (RSSM or VTA dynamics) on pinpad.

    python -m experiments.train --configs pinpad size12m --dynamics rssm --logdir runs/rssm

Every configuration field is a flag (`--help` lists them); `--configs` applies presets in
order. Training again in the same --logdir resumes from its newest checkpoint that restores (a
damaged one is skipped with a warning on stderr and left as it is).
"""

from __future__ import annotations

import os
import pathlib
import sys

import jax

import pinpad
from dreamer_jax import checkpoint, config as cfg
from dreamer_jax.run import JobFailed, RunDirInUse, seed_configs, train
from experiments import tracking
from experiments.envs import make_env


def _saved_config(argv: list[str]) -> cfg.Config | None:
    """The configuration saved in the --logdir that argv names, if there is one."""
    for i, arg in enumerate(argv):
        value = arg.split("=", 1)[1] if arg.startswith("--logdir=") else (
            argv[i + 1] if arg == "--logdir" and i + 1 < len(argv) else None)
        if value and (pathlib.Path(value) / "config.json").exists():
            return cfg.load(pathlib.Path(value) / "config.json")
    return None


def main(argv: list[str] | None = None) -> int:
    """Train (or resume) the run the flags describe; 2 with one `error:` line on bad input, 0 when done."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        # Flags given for an existing run are read on top of its saved configuration, so a bare
        # `--logdir DIR` resumes it and a conflicting flag is caught.
        config = cfg.parse(argv, tasks=pinpad.TASKS, base=_saved_config(argv))
        cfg.check_for_acting(config)
        if config.distributed:
            _join_job()
        env = make_env(config)
        lines = train(config, env, probe=tracking.probe(env))
    except (cfg.ConfigError, RunDirInUse, checkpoint.CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except JobFailed as error:
        print(f"error: {error}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        # A normal exit would wait in jax.distributed's shutdown barrier for the lost process, then abort.
        os._exit(3)
    if jax.process_index() > 0:  # one process of a multi-host job reports
        return 0
    for run, line in zip(seed_configs(config), lines):
        logdir = pathlib.Path(run.logdir)
        print(f"metrics: {logdir / 'metrics.jsonl'}\ncheckpoints: {logdir / 'checkpoints'}")
        shown = {k: line[k] for k in ("step", "train_return", "eval_return", "loss_rec") if line.get(k) is not None}
        if shown:
            print("last: " + ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}"
                                       for k, v in shown.items()))
    return 0


def _join_job() -> None:
    """Join a multi-host job: from JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and JAX_PROCESS_ID when they are set
    (any launcher, or by hand), else from SLURM or Open MPI. CPU processes exchange gradients over gloo."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    names = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")
    given = {name: os.environ.get(name) for name in names}
    try:
        if any(given.values()):
            if not all(given.values()):
                raise ValueError(f"{', '.join(n for n in names if not given[n])} not set beside "
                                 f"{', '.join(n for n in names if given[n])}; set all three")
            jax.distributed.initialize(given["JAX_COORDINATOR_ADDRESS"], int(given["JAX_NUM_PROCESSES"]),
                                       int(given["JAX_PROCESS_ID"]))
        else:
            jax.distributed.initialize()
    except (ValueError, RuntimeError) as error:
        raise cfg.ConfigError(f"--distributed True could not join a multi-host job ({error}); launch under srun "
                              "(SLURM) or mpirun (Open MPI), set JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES and "
                              "JAX_PROCESS_ID, or drop --distributed") from error


if __name__ == "__main__":
    sys.exit(main())
