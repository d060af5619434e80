"""Gradient updates per second, compile time and memory of the DreamerV3 learner, per model size and batch.

    python -m benchmarks.train_throughput [--presets debug size1m size12m] [--batches 16x64 12x40]
                                          [--sizes 16 32 64] [--precision fp32] [--updates 5] [--json PATH]
                                          [--fused_presets debug] [--fused_ratios 32 320] [--fused_seconds 5]

Every row runs in this process, in the order asked for. For each preset and batch:

- compile: lowering plus XLA compilation of `jax.jit(learner.update, donate_argnums=0)`, timed
  through `.lower(state).compile()` (the persistent compilation cache is switched off, so this
  is a real compile);
- seconds per update: the median of `--updates` timed updates after one warm-up update, each
  waited for with `jax.block_until_ready`; updates/s is its inverse. Beside it, the process CPU
  time per update and "cores busy" (CPU time / wall time): on a shared machine a wall time with
  fewer cores busy than the work can use was slowed by other processes;
- env steps/s implied at a train ratio r: updates/s * batch_size * batch_length / r, at r = 32
  (the DreamerV3 default) and r = 320 (the pinpad preset's), as if acting were free;
- memory: the process's peak RSS so far (getrusage; it only grows, so later rows include the
  peaks of earlier ones), XLA's temporary buffer size of the compiled update
  (`memory_analysis()`), and the device's peak bytes in use where `memory_stats()` reports it
  (on the CPU it reports nothing).

Then the fused training loop, `learner.chunk(state, iterations, True)` (env steps with the
policy acting, replay writes and the updates in the train_ratio proportion), at the debug preset
(`--fused_presets`), the same batches and train ratios 32 and 320 (`--fused_ratios`), as env
steps/s including acting, and as a ratio to the same number of updates alone, timed alternately
with it so that both see the same load. On the CPU `chunk` dispatches each iteration
separately (see `Learner.chunk`); on accelerators it is one scan.

The benchmark configs use one env and a replay of 2 x batch_length steps, filled by a prefill
`chunk(state, k, False)` first; the cost of an update does not depend on the replay's size.

The learner's programs compile with `dreamer_jax.train.COMPILER_OPTIONS` (XLA:CPU without YNNPACK);
`--xla_defaults` times the update rows as XLA compiles by default instead, for comparison.

Recorded figures, printed beside ours: the public official JAX DreamerV3 timed on the same kind of
2-core CPU, float32, batch 16 x 64, on another day (4.76 s per update at size1m, 20.4 s at size12m).
Their ratio column (recorded seconds / our seconds) is NOT a side-by-side measurement: the same
machine type has given figures up to 20% apart on different days. For a ratio measured side by side,
use `python -m benchmarks.official_ratio`, which times the official code and ours one after the other.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time

import jax

from benchmarks import record
from dreamer_jax import config as config_lib
from dreamer_jax.train import COMPILER_OPTIONS, Learner, steps_per_iteration
from experiments.envs import make_env

PRESETS = ("debug", "size1m", "size12m")
BATCHES = ("16x64", "12x40")
TRAIN_RATIOS = (32, 320)  # the DreamerV3 default and the pinpad preset's
# Seconds per update of the public official JAX DreamerV3 on this kind of 2-core CPU, float32, 16 x 64, recorded
# on another day (not side by side; see benchmarks.official_ratio).
REFERENCE = {("size1m", 16, 64, "fp32"): 4.76, ("size12m", 16, 64, "fp32"): 20.4}
MIB = 1 << 20


def _parse_batch(text: str) -> tuple[int, int]:
    try:
        size, length = (int(part) for part in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"batch {text!r} is not BATCHxLENGTH, e.g. 16x64") from None
    if size < 1 or length < 2:
        raise argparse.ArgumentTypeError(f"batch {text!r}: need batch size >= 1 and length >= 2")
    return size, length


def _config(preset: str, batch: tuple[int, int], precision: str, train_ratio: float = 32.0,
            image: int | None = None):
    """The preset at this batch, precision and image size (default: the preset's), with one env and a replay of
    two sequences per env."""
    size, length = batch
    image = {} if image is None else {"size": image}
    return config_lib.make(preset, precision=precision, batch_size=size, batch_length=length, envs=1,
                           replay_size=2 * length, train_ratio=train_ratio, compile=True, **image)


def _prefilled(config, seed: int):
    """A learner and a state whose replay holds at least batch_length steps per env."""
    env = make_env(config)
    learner, state = Learner.create(config, env, jax.random.PRNGKey(seed))
    env_steps, _ = steps_per_iteration(config)
    state, _ = learner.chunk(state, math.ceil(config.batch_length / env_steps), False)
    return learner, jax.block_until_ready(state)


def _max_rss_mib() -> float:
    # ru_maxrss is in KiB on Linux and in bytes on macOS.
    scale = 1 if sys.platform == "darwin" else 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / MIB


def _device_peak_mib() -> float | None:
    stats = jax.devices()[0].memory_stats()
    if not stats or "peak_bytes_in_use" not in stats:
        return None
    return stats["peak_bytes_in_use"] / MIB


def _load() -> float:
    return os.getloadavg()[0]


def _timed(fn, state):
    """Run `state = fn(state)`, waiting for it; returns (state, wall seconds, process CPU seconds)."""
    wall, cpu = time.perf_counter(), time.process_time()
    state = jax.block_until_ready(fn(state))
    return state, time.perf_counter() - wall, time.process_time() - cpu


def _compile_update(learner: Learner, state, xla_defaults: bool = False):
    """`learner.update` jitted as the learner jits its programs (with `COMPILER_OPTIONS`, or with XLA's defaults),
    lowered and compiled for `state`; returns it and the timings."""
    t0 = time.perf_counter()
    options = None if xla_defaults else COMPILER_OPTIONS
    lowered = jax.jit(learner.update, donate_argnums=0, compiler_options=options).lower(state)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    return compiled, t1 - t0, time.perf_counter() - t1


def update_row(preset: str, batch: tuple[int, int], precision: str, updates: int, seed: int,
               image: int | None = None, xla_defaults: bool = False):
    """Compile time, seconds per update and memory of one preset at one batch and image size; also the compiled
    update."""
    start = time.perf_counter()
    config = _config(preset, batch, precision, image=image)
    learner, state = _prefilled(config, seed)
    params = sum(x.size for x in jax.tree.leaves(state.params))
    compiled, lower_s, compile_s = _compile_update(learner, state, xla_defaults)
    memory = compiled.memory_analysis()

    state, metrics = jax.block_until_ready(compiled(state))  # warm-up: the first execution allocates
    times, cpu_times = [], []
    for _ in range(updates):
        (state, metrics), wall, cpu = _timed(lambda s: compiled(s[0]), (state, metrics))
        times.append(wall)
        cpu_times.append(cpu)

    seconds = statistics.median(times)
    size, length = batch
    reference = REFERENCE.get((preset, size, length, precision)) if config.size == 64 else None
    row = dict(
        preset=preset, image=config.size, batch_size=size, batch_length=length, precision=precision,
        compiler_options="XLA defaults" if xla_defaults else COMPILER_OPTIONS, params=int(params),
        lower_s=lower_s, compile_s=compile_s, lower_compile_s=lower_s + compile_s,
        update_times_s=times, update_cpu_times_s=cpu_times, seconds_per_update=seconds,
        cpu_seconds_per_update=statistics.median(cpu_times), cores_busy=sum(cpu_times) / sum(times),
        updates_per_s=1 / seconds, env_steps_per_s={str(r): size * length / (seconds * r) for r in TRAIN_RATIOS},
        reference_seconds_per_update=reference, reference_ratio=None if reference is None else reference / seconds,
        max_rss_mib=_max_rss_mib(), xla_temp_mib=None if memory is None else memory.temp_size_in_bytes / MIB,
        xla_argument_mib=None if memory is None else memory.argument_size_in_bytes / MIB,
        device_peak_mib=_device_peak_mib(), grad_norm_finite=bool(jax.numpy.isfinite(metrics["grad_norm"])),
        load_1min=_load(), row_wall_s=time.perf_counter() - start)
    return row, compiled


def fused_row(preset: str, batch: tuple[int, int], precision: str, train_ratio: float, seconds: float,
              seed: int, update=None) -> dict:
    """Env steps/s of `learner.chunk(state, iterations, True)` (acting, replay writes and updates), and of the
    same number of updates alone, timed alternately so that both see the same machine load.

    `update` is a compiled update for this preset and batch (the train ratio does not change it); without one,
    it is compiled here.
    """
    start = time.perf_counter()
    config = _config(preset, batch, precision, train_ratio)
    learner, state = _prefilled(config, seed)
    env_steps, updates = steps_per_iteration(config)
    env_steps *= config.envs
    iterations = max(1, round(8 / updates))  # about 8 updates per call
    if update is None:
        update = _compile_update(learner, state)[0]

    state, first_call_s, _ = _timed(lambda s: learner.chunk(s, iterations, True)[0], state)  # compiles
    state = jax.block_until_ready(update(state)[0])  # warm-up
    fused_wall = fused_cpu = alone_wall = alone_cpu = 0.0
    calls = 0
    while calls < 2 or fused_wall < seconds:
        state, wall, cpu = _timed(lambda s: learner.chunk(s, iterations, True)[0], state)
        fused_wall, fused_cpu = fused_wall + wall, fused_cpu + cpu
        for _ in range(iterations * updates):
            state, wall, cpu = _timed(lambda s: update(s)[0], state)
            alone_wall, alone_cpu = alone_wall + wall, alone_cpu + cpu
        calls += 1

    size, length = batch
    total_updates = calls * iterations * updates
    rate = calls * iterations * env_steps / fused_wall
    implied = total_updates / alone_wall * size * length / train_ratio
    return dict(
        preset=preset, batch_size=size, batch_length=length, precision=precision, train_ratio=train_ratio,
        env_steps_per_iteration=env_steps, updates_per_iteration=updates, iterations_per_call=iterations,
        calls=calls, first_call_s=first_call_s, fused_s=fused_wall, fused_cpu_s=fused_cpu,
        alone_s=alone_wall, alone_cpu_s=alone_cpu, env_steps_per_s=rate, updates_per_s=total_updates / fused_wall,
        seconds_per_update_alone=alone_wall / total_updates, implied_env_steps_per_s=implied,
        ratio_to_implied=rate / implied, cores_busy=fused_cpu / fused_wall,
        max_rss_mib=_max_rss_mib(), load_1min=_load(), row_wall_s=time.perf_counter() - start)


def _fmt(value, spec: str = ",.2f", none: str = "—") -> str:
    return none if value is None else format(value, spec)


def _rate(value: float) -> str:
    return format(value, ",.3g") if value < 100 else format(value, ",.0f")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(config_lib.presets()),
                        help="model presets, in order")
    parser.add_argument("--batches", nargs="+", type=_parse_batch, default=[_parse_batch(b) for b in BATCHES],
                        metavar="BxT", help="batch size x batch length, e.g. 16x64 12x40")
    parser.add_argument("--sizes", nargs="+", type=int, default=None, choices=(16, 32, 64),
                        help="image sizes of the update rows (default: each preset's own)")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    parser.add_argument("--updates", type=int, default=5, help="timed updates per row (after one warm-up)")
    parser.add_argument("--fused_presets", "--fused-presets", nargs="*", default=["debug"],
                        choices=list(config_lib.presets()), help="presets to time the fused chunk loop at")
    parser.add_argument("--fused_ratios", "--fused-ratios", nargs="*", type=float, default=list(TRAIN_RATIOS),
                        help="train ratios to time the fused loop at")
    parser.add_argument("--fused_seconds", "--fused-seconds", type=float, default=5.0,
                        help="timed seconds per fused row (at least two calls)")
    parser.add_argument("--xla_defaults", "--xla-defaults", action="store_true",
                        help="compile the update rows with XLA's default options instead of the learner's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", metavar="PATH", help="also write every measurement to this JSON file")
    args = parser.parse_args(argv)
    if args.updates < 1:
        parser.error("--updates must be at least 1")

    # Time real compiles, never a persistent-cache hit (the test suite sets a cache directory).
    jax.config.update("jax_enable_compilation_cache", False)
    machine = record.machine()

    rows, kept = [], {}
    for preset in args.presets:
        for image in args.sizes or [None]:
            for batch in args.batches:
                print(f"update: {preset} {image or ''} {batch[0]}x{batch[1]} {args.precision} ...", file=sys.stderr,
                      flush=True)
                row, compiled = update_row(preset, batch, args.precision, args.updates, args.seed, image,
                                           args.xla_defaults)
                rows.append(row)
                if preset in args.fused_presets and image is None and not args.xla_defaults:
                    kept[preset, batch] = compiled
            print(f"  {rows[-1]['seconds_per_update']:.4f} s/update, compile {rows[-1]['lower_compile_s']:.1f} s, "
                  f"row {rows[-1]['row_wall_s']:.0f} s", file=sys.stderr, flush=True)

    fused = []
    for preset in args.fused_presets:
        for batch in args.batches:
            for ratio in args.fused_ratios:
                print(f"fused: {preset} {batch[0]}x{batch[1]} ratio {ratio:g} ...", file=sys.stderr, flush=True)
                fused.append(fused_row(preset, batch, args.precision, ratio, args.fused_seconds, args.seed,
                                       kept.get((preset, batch))))
                print(f"  {fused[-1]['env_steps_per_s']:.3g} env steps/s, "
                      f"{fused[-1]['ratio_to_implied']:.2f} of updates alone", file=sys.stderr, flush=True)

    options = "XLA's defaults" if args.xla_defaults else f"the learner's options {COMPILER_OPTIONS}"
    print(f"Training throughput, {args.precision}; {machine['platform']} ({machine['device']}), "
          f"{machine['processor']}, {machine['cpus']} cpus, jax {machine['jax']}; one env, replay 2 x batch_length; "
          f"updates compiled with {options}")
    print()
    print("| preset | image | batch | params | compile s | s / update | CPU s / update | cores busy | updates/s "
          "| env steps/s @32 | env steps/s @320 | official s / update, recorded another day | recorded / ours "
          "(not side by side) | max RSS MiB "
          "| XLA temp MiB | device peak MiB | load |")
    print("|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        steps = r["env_steps_per_s"]
        ratio = _fmt(r["reference_ratio"], ",.2f")
        print(f"| {r['preset']} | {r['image']} | {r['batch_size']}x{r['batch_length']} | {r['params']:,} | "
              f"{r['lower_compile_s']:,.1f} | {r['seconds_per_update']:,.3f} | {r['cpu_seconds_per_update']:,.2f} | "
              f"{r['cores_busy']:.2f} | {_rate(r['updates_per_s'])} | {_rate(steps['32'])} | {_rate(steps['320'])} | "
              f"{_fmt(r['reference_seconds_per_update'])} | {ratio}{'x' if r['reference_ratio'] else ''} | "
              f"{r['max_rss_mib']:,.0f} | {_fmt(r['xla_temp_mib'], ',.0f')} | "
              f"{_fmt(r['device_peak_mib'], ',.0f', 'n/a')} | {r['load_1min']:.1f} |")
    if fused:
        print()
        print("Fused loop, learner.chunk(state, iterations, True): env steps with the policy acting, replay writes "
              "and updates; the same number of updates alone timed alternately with it")
        print()
        print("| preset | batch | train ratio | env steps : updates | first call s | env steps/s | updates/s "
              "| cores busy | s / update alone | env steps/s, updates alone | fused / updates alone | load |")
        print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for f in fused:
            print(f"| {f['preset']} | {f['batch_size']}x{f['batch_length']} | {f['train_ratio']:g} | "
                  f"{f['env_steps_per_iteration']} : {f['updates_per_iteration']} | {f['first_call_s']:,.1f} | "
                  f"{_rate(f['env_steps_per_s'])} | {_rate(f['updates_per_s'])} | {f['cores_busy']:.2f} | "
                  f"{f['seconds_per_update_alone']:,.3f} | {_rate(f['implied_env_steps_per_s'])} | "
                  f"{f['ratio_to_implied']:.2f} | {f['load_1min']:.1f} |")
    print()
    print(f"compile: lower + XLA compile of jit(update). s / update: median wall time of {args.updates} updates "
          "after one warm-up. CPU s / update: the process's CPU time (user + system, all threads) per update; "
          f"cores busy: CPU time / wall time (at most {machine['cpus']}; lower when other processes hold cores or "
          "the work does not spread over threads). env steps/s @r = updates/s x batch_size x batch_length / r. "
          "Official: the public official JAX DreamerV3 on this kind of 2-core CPU, float32, 16x64, recorded on "
          "another day, so its ratio is not side by side (that is benchmarks.official_ratio). Max RSS: the "
          "process peak so far (it only grows, row by row). load: the 1-minute load average at the end of the row.")

    if args.json:
        with open(args.json, "w") as file:
            json.dump(dict(machine=machine, args={**vars(args), "batches": [f"{b}x{t}" for b, t in args.batches]},
                           updates=rows, fused=fused), file, indent=2)


if __name__ == "__main__":
    main()
