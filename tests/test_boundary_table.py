"""The across-runs table: run-name parsing, rows from evaluation results, CSV round trip, Markdown mean ± sd and, for
p-values, log10 p with the seeds below 0.05."""

import csv
import math

import pytest

from dreamer_jax.boundaries import table


def _result(lift, f1_at_1, count, log10_p=None):
    """A minimal evaluation result: every event type the table reads, with known values."""
    events = {}
    for i, name in enumerate(table.TABLE_EVENTS):
        events[name] = {"all": {"lift_over_event_rate": lift + i, "hypergeom_log10_p": log10_p,
                                "circular_shift_log10_p": -float(i + 1),
                                "auprc": 0.5, "periodic_baseline": 0.1, "periodic_best": 0.2,
                                "tolerance": {"0": {"f1": 0.0}, "1": {"f1": f1_at_1}}}}
    return {"boundary_count": count, "forced_count": 2, "events": events}


def _rows():
    return [
        table.row("pinpad_eight_vta_seed0", {"task": "pinpad_eight", "seed": 0}, _result(2.0, 0.25, 100, -30.0)),
        table.row("pinpad_eight_vta_seed1", {"task": "pinpad_eight", "seed": 1}, _result(4.0, 0.75, 120, -0.5)),
        table.row("pinpad_eight_rssm_seed0", {"task": "pinpad_eight", "seed": 0}, _result(1.0, 0.1, 80)),
        table.row("pinpad_eight_rssm_seed1", {"task": "pinpad_eight", "seed": 1}, _result(1.5, 0.2, 90)),
    ]


def test_parse_run_name():
    assert table.parse_run_name("pinpad_eight_vta_force0_t1_seed3", "pinpad_eight") == ("vta_force0_t1", 3)
    assert table.parse_run_name("vta_force0_seed12", "pinpad_eight") == ("vta_force0", 12)
    assert table.parse_run_name("pinpad_eight_vta_force0_t1_seed3") == ("pinpad_eight_vta_force0_t1", 3)
    assert table.parse_run_name("my_run", "pinpad_eight") == ("my_run", None)
    assert table.parse_run_name("pinpad_eight_seed2", "pinpad_eight") == ("pinpad_eight", 2)


def test_row_is_flat_with_the_headline_metrics():
    r = table.row("pinpad_eight_vta_force0_t1_seed3", {"task": "pinpad_eight", "seed": 7}, _result(2.0, 0.25, 100))
    assert tuple(r) == table.COLUMNS
    assert (r["run"], r["task"], r["condition"], r["seed"]) == ("pinpad_eight_vta_force0_t1_seed3", "pinpad_eight",
                                                                "vta_force0_t1", 3)
    assert r["boundary_count"] == 100 and r["forced_count"] == 2
    assert r["pad_lift_over_event_rate"] == 2.0 and r["reward_lift_over_event_rate"] == 3.0
    assert r["frame_delta_circular_shift_log10_p"] == -3.0 and r["pad_f1_tau1"] == 0.25
    assert r["pad_hypergeom_log10_p"] is None
    assert table.row("odd", {"seed": 5}, {"events": {}})["seed"] == 5  # no _seed{n}: the config's seed


def test_summary_mean_and_sd_per_condition():
    summary = {s["condition"]: s for s in table.summary(_rows())}
    assert sorted(summary) == ["rssm", "vta"]
    vta = summary["vta"]
    assert vta["seeds"] == 2 and vta["task"] == "pinpad_eight"
    assert vta["pad_lift_over_event_rate_mean"] == 3.0
    assert vta["pad_lift_over_event_rate_sd"] == pytest.approx(math.sqrt(2))  # values 2 and 4
    assert vta["boundary_count_mean"] == 110 and vta["boundary_count_sd"] == pytest.approx(math.sqrt(200))
    # p-values are never averaged: the seeds below 0.05 (log10 p -30 and -0.5: one) and the median log10 p
    assert (vta["pad_hypergeom_log10_p_below"], vta["pad_hypergeom_log10_p_defined"]) == (1, 2)
    assert vta["pad_hypergeom_log10_p_median"] == -15.25 and "pad_hypergeom_log10_p_mean" not in vta
    assert summary["rssm"]["pad_hypergeom_log10_p_median"] is None  # undefined in every seed
    single = table.summary(_rows()[:1])[0]
    assert single["pad_auprc_mean"] == 0.5 and single["pad_auprc_sd"] is None


def test_write_csv_round_trip_and_markdown(tmp_path):
    rows = _rows()
    csv_path, md_path = table.write(rows, tmp_path / "out", skipped=[("pinpad_eight_vta_seed9", "no checkpoint")])
    assert (csv_path.name, md_path.name) == ("boundary_table.csv", "boundary_table.md")
    with open(csv_path, newline="") as f:
        reader = csv.DictReader(f)
        parsed = list(reader)
    assert tuple(reader.fieldnames) == table.COLUMNS and len(parsed) == 4
    for original, back in zip(rows, parsed):
        assert back["run"] == original["run"] and back["condition"] == original["condition"]
        assert int(back["seed"]) == original["seed"] and int(back["boundary_count"]) == original["boundary_count"]
        for column in table.NUMERIC[2:]:
            value = original[column]
            assert (back[column] == "") if value is None else (float(back[column]) == value), column
    markdown = md_path.read_text()
    assert "| pinpad_eight | vta | 2 | 110 ± 14.1 |" in markdown  # boundary counts 100 and 120
    # rssm: pad lift, circular p 0.1 in both seeds (not below 0.05), hypergeometric p undefined
    assert "| 1.25 ± 0.354 | 0 of 2 < 0.05 (median -1) | n/a |" in markdown
    assert "1 of 2 < 0.05 (median -15.2)" in markdown  # vta's hypergeometric p
    assert "3 ± 1.41" in markdown and "1.25 ± 0.354" in markdown  # pad lift: vta 2, 4; rssm 1, 1.5
    assert "| pinpad_eight_rssm_seed1 | pinpad_eight | rssm | 1 | 90 |" in markdown
    assert "- `pinpad_eight_vta_seed9`: no checkpoint" in markdown
    assert markdown.index("Per condition") < markdown.index("Per run") < markdown.index("Skipped")
