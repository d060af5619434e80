"""Configuration: prototype commands, preset order, flag precedence, --help, errors, JSON round trip, diff."""

import dataclasses
import json
import re
import subprocess
import sys

import numpy as np
import pytest

from dreamer_jax import config as C

TASKS = ("pinpad_three", "pinpad_four", "pinpad_five", "pinpad_six", "pinpad_seven", "pinpad_eight")

PROTOTYPE_RSSM = (
    "--logdir DIR --configs pinpad --task pinpad_eight --steps 40000 --eval_every 10000 --log_every 10000 "
    "--envs 1 --prefill 1200 --batch_size 12 --batch_length 40 --train_ratio 320 --size 64 --action_repeat 1 "
    "--time_limit 1000 --precision 16 --compile True --seed 0 --dynamics_type rssm"
).split()
PROTOTYPE_VTA = PROTOTYPE_RSSM[:-1] + (
    "vta --vta_max_seg_len 30 --vta_boundary_force_scale 0.0 --vta_boundary_temp 1.0 "
    "--vta_boundary_rate 0.0 --vta_boundary_scale 0.0"
).split()
PROTOTYPE_VALUES = dict(
    logdir="DIR", task="pinpad_eight", steps=40000, eval_every=10000, log_every=10000, envs=1, prefill=1200,
    batch_size=12, batch_length=40, train_ratio=320.0, size=64, action_repeat=1, time_limit=1000,
    precision="bf16", compile=True, seed=0,
)
SIZE_TABLE = {
    "size1m": (512, 64, 4, 4, 64),
    "size12m": (2048, 256, 16, 16, 256),
    "size25m": (3072, 384, 24, 24, 384),
    "size50m": (4096, 512, 32, 32, 512),
    "size100m": (6144, 768, 48, 48, 768),
    "size200m": (8192, 1024, 64, 64, 1024),
    "size400m": (12288, 1536, 96, 96, 1536),
}


def test_prototype_rssm_command():
    config = C.parse(PROTOTYPE_RSSM, tasks=TASKS)
    assert {name: getattr(config, name) for name in PROTOTYPE_VALUES} == PROTOTYPE_VALUES
    assert config.dynamics == "rssm"
    assert config.updates_per_env_step == pytest.approx(320 / (12 * 40))


def test_prototype_vta_command():
    config = C.parse(PROTOTYPE_VTA, tasks=TASKS)
    assert {name: getattr(config, name) for name in PROTOTYPE_VALUES} == PROTOTYPE_VALUES
    assert config.dynamics == "vta"
    assert (config.vta_max_seg_len, config.vta_boundary_force_scale, config.vta_boundary_temp) == (30, 0.0, 1.0)
    assert (config.vta_boundary_rate, config.vta_boundary_scale) == (0.0, 0.0)
    assert C.diff(C.parse(PROTOTYPE_RSSM), config) == {"dynamics": ("rssm", "vta")}


def test_pinpad_preset_alone_gives_the_prototype_run():
    config = C.parse(["--configs", "pinpad"])
    expected = {k: v for k, v in PROTOTYPE_VALUES.items() if k not in ("logdir", "precision", "compile", "seed")}
    assert {name: getattr(config, name) for name in expected} == expected


def test_defaults_are_dreamerv3_2024():
    config = C.Config()
    assert (config.batch_size, config.batch_length, config.train_ratio) == (16, 64, 32.0)
    assert (config.lr, config.warmup, config.agc, config.beta2, config.eps, config.momentum) == (
        4e-5, 1000, 0.3, 0.999, 1e-20, 0.9)
    assert (config.dyn_scale, config.rep_scale, config.repval_scale, config.free_nats) == (1.0, 0.1, 0.3, 1.0)
    assert (config.optimizer, config.core, config.initial, config.precision) == ("laprop", "blockgru", "zeros", "bf16")
    assert (config.deter, config.hidden, config.classes, config.depth, config.units) == SIZE_TABLE["size200m"]
    assert C.parse([]) == config


def test_the_cpu_preset_is_the_first_with_eight_evaluation_episodes():
    """pinpad_cpu, chosen by the pilots (docs/dreamer_defaults.md), is pinpad_cpu_v1 but for its evaluation episodes
    and an encoder depth that names the one v1 took from --depth; pinpad_cpu_v3 keeps the fields its records have."""
    assert C.diff(C.make("pinpad_cpu_v1"), C.make("pinpad_cpu")) == {"enc_depth": (0, 4), "eval_episodes": (4, 8)}
    v3 = C.make("pinpad_cpu_v3")
    assert (v3.depth, v3.enc_depth, v3.enc_kernel, v3.train_ratio, v3.lr, v3.latent_logit_scale, v3.rec_scale) == (
        16, 8, 3, 64.0, 3e-4, 3.0, 16.0)


def test_dreamer2023_preset_switches_the_2023_choices():
    config = C.make("dreamer2023")
    assert (config.dyn_scale, config.optimizer, config.core, config.initial) == (0.5, "adam2023", "gru2023", "learned")
    assert (config.model_lr, config.model_eps, config.model_clip) == (1e-4, 1e-8, 1000.0)
    assert (config.actor_lr, config.actor_eps, config.actor_clip) == (3e-5, 1e-5, 100.0)
    assert (config.critic_lr, config.critic_eps, config.critic_clip) == (3e-5, 1e-5, 100.0)


@pytest.mark.parametrize("name", list(SIZE_TABLE))
def test_size_presets_match_the_table(name):
    config = C.make(name)
    assert (config.deter, config.hidden, config.classes, config.depth, config.units) == SIZE_TABLE[name]
    assert config.stoch == 32 and config.deter % config.blocks == 0


def test_every_preset_sets_known_fields_and_is_valid():
    fields = {f.name for f in dataclasses.fields(C.Config)}
    for name, values in C.presets().items():
        assert set(values) <= fields, name
        C.make(name).validate()


def test_debug_is_tiny():
    config = C.make("debug")
    assert config.deter <= 64 and config.deter % config.blocks == 0 and config.blocks > 1
    assert config.stoch * config.classes <= 16 and config.size == 16
    assert config.batch_size * config.batch_length <= 16 and config.horizon <= 4
    assert config.vta_max_seg_len < config.batch_length


def test_presets_merge_in_order():
    small_last = C.parse(["--configs", "size12m", "debug"])
    size_last = C.parse(["--configs", "debug", "size12m"])
    assert (small_last.deter, small_last.stoch, small_last.batch_size) == (64, 4, 2)
    assert (size_last.deter, size_last.stoch, size_last.classes) == (2048, 32, 16)
    assert size_last.batch_size == 2 and size_last.horizon == C.make("debug").horizon
    assert C.parse(["--configs", "debug", "--configs", "size12m"]) == size_last


def test_explicit_flags_beat_presets_wherever_they_appear():
    config = C.parse(["--batch_size", "5", "--configs", "debug", "pinpad", "--deter", "128", "--envs", "3"])
    assert (config.batch_size, config.deter, config.envs, config.batch_length) == (5, 128, 3, 40)


def test_parse_over_a_base_config():
    saved = C.make("debug", seed=4)
    assert C.parse(["--steps", "99"], base=saved) == dataclasses.replace(saved, steps=99)


@pytest.mark.parametrize("text,value", [("True", True), ("true", True), ("1", True),
                                        ("False", False), ("false", False), ("0", False)])
def test_booleans(text, value):
    assert C.parse(["--compile", text]).compile is value
    assert C.parse(["--vta_boundary_reward_input", text]).vta_boundary_reward_input is value


@pytest.mark.parametrize("text,value", [("16", "bf16"), ("bf16", "bf16"), ("bfloat16", "bf16"),
                                        ("32", "fp32"), ("fp32", "fp32"), ("float32", "fp32")])
def test_precision_aliases(text, value):
    config = C.parse(["--precision", text])
    assert config.precision == value


def test_dynamics_and_its_alias():
    assert C.parse(["--dynamics", "vta"]).dynamics == "vta"
    assert C.parse(["--dynamics_type", "vta"]).dynamics == "vta"


def test_integral_numbers_in_exponent_form():
    assert C.parse(["--replay_size", "1e6", "--steps", "4e4"]).replay_size == 1_000_000


def test_help_lists_every_field_with_its_default(capsys):
    with pytest.raises(SystemExit) as exit_info:
        C.parse(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--dynamics_type" in text and all(name in text for name in C.presets())
    for f in dataclasses.fields(C.Config):
        entry = re.search(rf"--{f.name} (INT|FLOAT|BOOL|STR|{{[\w,]+}})[ ,]", text)
        shown = text[text.index("(default: ", entry.end()) + len("(default: "):].split(")")[0]
        assert shown == ("''" if f.default == "" else str(f.default)), f.name


BAD = [
    (["--batch_size", "0"], "--batch_size=0"),
    (["--deter", "-8"], "--deter=-8"),
    (["--envs", "0"], "--envs=0"),
    (["--steps", "0"], "--steps=0"),
    (["--batch_length", "1"], "--batch_length=1"),
    (["--deter", "100", "--blocks", "8"], "divisible by --blocks=8"),
    (["--train_ratio", "0"], "--train_ratio=0.0"),
    (["--train_ratio", "-3"], "--train_ratio=-3.0"),
    (["--train_ratio", "nan"], "--train_ratio=nan"),
    (["--action_repeat", "2"], "--action_repeat=2"),
    (["--size", "84"], "must be 16, 32 or 64"),
    (["--precision", "8"], "bf16, fp32"),
    (["--dynamics", "lstm"], "rssm, vta"),
    (["--dynamics_type", "lstm"], "rssm, vta"),
    (["--optimizer", "sgd"], "laprop, adam2023"),
    (["--core", "lstm"], "blockgru, gru2023"),
    (["--initial", "random"], "zeros, learned"),
    (["--vta_rate_mode", "episode"], "step, batch"),
    (["--compile", "yes"], "True/False"),
    (["--seed", "x"], "not a number"),
    (["--steps", "1.5"], "an integer"),
    (["--unimix", "1"], "--unimix=1.0"),
    (["--bins", "256"], "odd"),
    (["--return_lambda", "1.5"], "--return_lambda=1.5"),
    (["--slow_critic_rate", "0"], "--slow_critic_rate=0.0"),
    (["--retnorm_low", "95", "--retnorm_high", "5"], "--retnorm_high=5.0"),
    (["--vta_boundary_scale", "1"], "--vta_boundary_rate=0.0"),
    (["--vta_boundary_rate", "1"], "--vta_boundary_rate=1.0"),
    (["--vta_boundary_temp", "0"], "--vta_boundary_temp=0.0"),
    (["--vta_max_seg_len", "0"], "--vta_max_seg_len=0"),
    (["--vta_lookahead", "-1"], "--vta_lookahead=-1"),
    (["--replay_size", "10"], "--replay_size=10"),
    (["--configs", "tiny"], "valid presets: debug"),
    (["--batchsize", "3"], "--batchsize (did you mean --batch_size?)"),
    (["--batch", "3"], "--batch"),
    (["stray"], "'stray'"),
]


@pytest.mark.parametrize("argv,words", BAD, ids=[" ".join(argv) for argv, _ in BAD])
def test_bad_inputs_name_the_problem(argv, words):
    with pytest.raises(C.ConfigError) as error:
        C.parse(argv)
    assert words in str(error.value)


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(C.ConfigError, match="pinpad_nine.*pinpad_three, pinpad_four"):
        C.parse(["--task", "pinpad_nine"], tasks=TASKS)
    assert C.parse(["--task", "pinpad_nine"]).task == "pinpad_nine"


def test_missing_flag_value_is_an_argparse_error():
    with pytest.raises(SystemExit) as exit_info:
        C.parse(["--lr"])
    assert exit_info.value.code == 2


def test_python_construction_is_validated_and_typed():
    assert C.Config(lr=1, precision="16").lr == 1.0 and C.Config(precision="16").precision == "bf16"
    with pytest.raises(C.ConfigError, match="--compile='True'"):
        C.Config(compile="True")
    with pytest.raises(C.ConfigError, match="--blocks=True"):
        C.Config(blocks=True)
    with pytest.raises(C.ConfigError, match="unknown config fields"):
        C.make("debug", batchsize=3)


def test_lookahead_is_refused_for_acting_only():
    analysis = C.make("debug", dynamics="vta", vta_lookahead=2)
    with pytest.raises(C.ConfigError, match="--vta_lookahead=2.*--vta_lookahead 0"):
        C.check_for_acting(analysis)
    C.check_for_acting(C.make("debug", dynamics="vta"))


def test_json_round_trip_is_exact(tmp_path):
    config = C.parse(PROTOTYPE_VTA + ["--lr", "1e-7", "--vta_boundary_rate", "0.1", "--vta_boundary_scale", "0.3"])
    text = json.dumps(C.to_dict(config))
    restored = C.from_dict(json.loads(text))
    assert restored == config and C.to_dict(restored) == C.to_dict(config)
    assert all(type(getattr(restored, n)) is type(getattr(config, n)) for n in C.to_dict(config))
    C.save(config, tmp_path / "config.json")
    assert C.load(tmp_path / "config.json") == config
    assert [p.name for p in tmp_path.iterdir()] == ["config.json"]


def test_from_dict_refuses_missing_and_unknown_fields(tmp_path):
    values = C.to_dict(C.make("debug"))
    del values["deter"]
    with pytest.raises(C.ConfigError, match=r"missing fields \['deter'\]"):
        C.from_dict(values)
    with pytest.raises(C.ConfigError, match=r"unknown fields \['extra'\]"):
        C.from_dict({**C.to_dict(C.Config()), "extra": 1})
    with pytest.raises(C.ConfigError, match="no saved configuration"):
        C.load(tmp_path / "absent.json")
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(C.ConfigError, match="not valid JSON"):
        C.load(tmp_path / "broken.json")


def test_a_config_saved_before_an_added_field_loads_with_the_value_it_ran_with():
    saved = C.to_dict(C.make("debug", scan_unroll=4))
    for name in C.ADDED_FIELDS:
        del saved[name]
    assert C.from_dict(saved) == C.make("debug", **C.ADDED_FIELDS)
    assert C.from_dict({**saved, "scan_unroll": 4}).scan_unroll == 4


def test_diff_lists_exactly_the_changed_fields():
    a = C.make("debug")
    b = dataclasses.replace(a, seed=7, dynamics="vta", lr=1e-3)
    assert C.diff(a, b) == {"seed": (0, 7), "dynamics": ("rssm", "vta"), "lr": (a.lr, 1e-3)}
    assert C.diff(a, a) == {}


def test_configs_are_frozen_and_hashable():
    config = C.Config()
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.seed = 1
    assert hash(config) == hash(C.Config())


def test_linear_schedule():
    assert C.linear_schedule(10.0, 0.0, 0, 10**6) == 10.0  # no steps: the start, held
    assert float(C.linear_schedule(10.0, 0.0, 100, 0)) == 10.0
    assert float(C.linear_schedule(10.0, 0.0, 100, 50)) == pytest.approx(5.0)
    assert float(C.linear_schedule(2.0, 0.5, 100, 50)) == pytest.approx(1.25)
    assert float(C.linear_schedule(10.0, 0.0, 100, 1000)) == 0.0
    assert float(C.linear_schedule(2.0, 0.5, 100, 1000)) == 0.5


def test_import_is_light():
    code = "import sys, dreamer_jax.config; print('jax' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"


def test_numpy_scalars_become_plain_python_values():
    config = C.Config(batch_size=np.int64(4), lr=np.float32(0.5), steps=np.float64(100.0))
    assert (type(config.batch_size), type(config.lr), type(config.steps)) == (int, float, int)
    json.dumps(C.to_dict(config))
