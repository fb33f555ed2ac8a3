"""The speed probe samples in a process of its own while the block runs, and leaves nothing
running."""

from __future__ import annotations

import time

from benchmarks.speed_probe import SpeedProbe, piece_us


def test_two_samples_give_deciles_within_them() -> None:
    # Few samples: the deciles are not extrapolated past the samples' own range.
    summary = SpeedProbe(samples_us=[30.0, 80.0]).summary()
    p10, _, p90 = (float(x) for x in summary["python_piece_us"].split(" / "))
    assert 30 <= p10 <= p90 <= 80


def test_the_probe_samples_once_a_second_and_stops_with_the_block() -> None:
    with SpeedProbe() as probe:
        time.sleep(3.5)
        process = probe.process
    assert process is not None and process.returncode is not None  # stopped, not left behind
    # A sample as soon as the interpreter is up, then one a second: 4 in 3.5 s at most, and at
    # least 2 even when its start takes a second and a half on a loaded 2-core machine.
    assert 2 <= len(probe.samples_us) <= 4, probe.samples_us
    assert all(0 < sample < 10_000 for sample in probe.samples_us)
    p10, median, p90 = (float(x) for x in probe.summary()["python_piece_us"].split(" / "))
    assert p10 <= median <= p90


def test_slow_seconds_are_counted_against_the_fast_ones() -> None:
    # Half the samples at twice the fast ones' time: a machine at half speed half the time.
    summary = SpeedProbe(samples_us=[30.0] * 10 + [60.0] * 10).summary()
    assert summary["python_piece_slow_share"] == "50%"
    assert summary["python_piece_us"].endswith("/ 60")


def test_a_sample_is_cpu_time_of_the_piece_alone() -> None:
    # ~30-60 µs on the 2-core AMD VM: never free, and far from a millisecond-scale figure.
    assert 0 < piece_us() < 10_000


def test_too_few_samples_give_no_summary() -> None:
    assert SpeedProbe(samples_us=[40.0]).summary() == {}
