"""The benchmark's smoke run: `bench.run` at a tiny scale still runs end to end and
prints its table (timings are not asserted: they are figures, docs/performance.md)."""

import subprocess
import sys

import pytest
from factories import ROOT

pytestmark = pytest.mark.slow


def test_the_benchmark_runs_at_a_small_scale(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.run",
            "--scale",
            "300",
            "--quick",
            "--workdir",
            str(tmp_path / "bench"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    out = done.stdout
    for row in (
        "first build: extract",
        "**first build, total**",
        "night: snapshots",
        "**night, total**",
        "night that trains the week's churn model: models",
        "floor: one pass over all orders",
    ):
        assert row in out, row
