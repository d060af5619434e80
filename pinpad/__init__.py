"""Pinpad (Visual Pin Pad) as a pure-JAX environment, plus a scripted solver and gymnasium ids."""

from pinpad.env import DEFAULT_LENGTH, DEFAULT_SIZE, EVENTS, NUM_ACTIONS, SIZES, Pinpad, PinpadState, make
from pinpad.layouts import TASKS
from pinpad.tracking import NO_AGENT, agent_cell, agent_tracking
from pinpad.solver import ScriptedPolicy, baseline_return, next_pad, scripted_action, scripted_rollout
from pinpad import gymnasium_env as _gymnasium_env  # registers the gymnasium ids

GYM_IDS = _gymnasium_env.GYM_IDS

__all__ = [
    "DEFAULT_LENGTH",
    "DEFAULT_SIZE",
    "EVENTS",
    "GYM_IDS",
    "NO_AGENT",
    "NUM_ACTIONS",
    "Pinpad",
    "PinpadState",
    "SIZES",
    "ScriptedPolicy",
    "TASKS",
    "agent_cell",
    "agent_tracking",
    "baseline_return",
    "make",
    "next_pad",
    "scripted_action",
    "scripted_rollout",
]
