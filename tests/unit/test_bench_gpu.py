"""``make bench-gpu``'s parts that need no GPU: its arguments, its time budget, the results it leaves
when cut off, how it picks the CUDA batch table, and that it stops at once, saying why, without CUDA.
The GPU run itself is never part of the tests."""

from __future__ import annotations

import asyncio
import json
import math
from pathlib import Path

import pytest

from bench import gpu, repeats
from escriba.transcription.batchbench import format_table, tuned_table
from escriba.transcription.batching import check_batch_table

pytestmark = pytest.mark.timeout(60)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_arguments_default_to_the_eight_minute_run(tmp_path: Path) -> None:
    args = gpu.parse_args([])
    assert args.budget_s == 480.0
    assert args.out == gpu.DEFAULT_OUT and args.summary == gpu.DEFAULT_OUT.with_suffix(".txt")
    assert args.clips == [100, 300] and args.repeats == 3 and args.compute_type == "int8_float16"

    out = tmp_path / "x.json"
    args = gpu.parse_args(
        [
            "--out",
            str(out),
            "--clips",
            "150,200",
            "--batch-sizes",
            "4,8",
            "--lengths",
            "30,90",
            "--budget-s",
            "60",
        ]
    )
    assert args.summary == tmp_path / "x.txt"
    assert (args.clips, args.batch_sizes, args.lengths, args.budget_s) == (
        [150, 200],
        [4, 8],
        [30.0, 90.0],
        60.0,
    )


@pytest.mark.parametrize(
    "bad",
    [
        ["--clips", "0"],
        ["--batch-sizes", "8,-1"],
        ["--budget-s", "0"],
        ["--repeats", "0"],
        ["--tune-share", "1"],
    ],
)
def test_arguments_that_cannot_run_are_refused(bad: list[str]) -> None:
    with pytest.raises(SystemExit):
        gpu.parse_args(bad)


def test_the_budget_counts_down_and_keeps_a_reserve() -> None:
    clock = FakeClock()
    budget = gpu.Budget(100.0, clock=clock)
    assert budget.remaining_s == 100.0 and budget.allows(79.0, reserve_s=20.0)
    assert not budget.allows(81.0, reserve_s=20.0)
    clock.now += 70.0
    assert budget.elapsed_s == 70.0 and budget.remaining_s == 30.0
    assert budget.timeout_s(reserve_s=20.0) == 10.0
    clock.now += 100.0
    assert budget.remaining_s == 0.0
    assert budget.timeout_s() == 1.0  # a step may still start (and be cut off), never with a negative limit


def test_partial_results_are_on_disk_after_every_step(tmp_path: Path) -> None:
    clock = FakeClock()
    out, summary = tmp_path / "gpu.json", tmp_path / "gpu.txt"
    lines: list[str] = []
    results = gpu.PartialResults(out, summary, gpu.Budget(480.0, clock=clock), echo=lines.append)

    results.step("device", "done")
    results.figure("pipeline_vs_plain_ratio", [1.5])
    results.write()
    first = json.loads(out.read_text())
    assert first["complete"] is False and first["steps"]["device"]["status"] == "done"
    assert first["keys"] == {"pipeline_vs_plain_ratio": 1.5}

    clock.now += 300.0
    results.figure("pipeline_vs_plain_ratio", [1.5, 1.1, 1.3])
    results.step("clips_300", "cut off", repeats=1, reason="the time budget ran out mid-repeat")
    cut = json.loads(out.read_text())
    assert cut["elapsed_s"] == 300.0 and cut["complete"] is False
    assert cut["spreads"]["pipeline_vs_plain_ratio"] == {
        "median": 1.3,
        "min": 1.1,
        "max": 1.5,
        "values": [1.5, 1.1, 1.3],
    }
    text = summary.read_text()
    assert "PARTIAL" in text and "pipeline_vs_plain_ratio: 1.300 [1.100-1.500] x3" in text
    assert "clips_300: cut off" in text
    assert any("clips_300: cut off" in line for line in lines)  # printed as it goes, too

    results.finish()
    assert json.loads(out.read_text())["complete"] is False  # a cut-off step keeps it partial
    assert not list(tmp_path.glob(".*.tmp"))  # written whole, through a temporary file


def test_a_run_with_every_step_done_is_complete(tmp_path: Path) -> None:
    results = gpu.PartialResults(
        tmp_path / "g.json", tmp_path / "g.txt", gpu.Budget(10.0), echo=lambda _: None
    )
    results.step("device", "done")
    results.step("tune", "skipped", reason="--batch-table given")
    results.finish()
    assert json.loads((tmp_path / "g.json").read_text())["complete"] is True
    assert "complete" in (tmp_path / "g.txt").read_text().splitlines()[0]


def test_repeats_stop_when_the_next_would_not_fit() -> None:
    clock = FakeClock()
    budget = gpu.Budget(100.0, clock=clock)
    results = gpu.PartialResults(Path("/nonexistent/never-written.json"), Path("/nonexistent/x.txt"), budget)
    results.write = lambda: None  # type: ignore[method-assign]  # keep this one off the disk
    ran: list[int] = []

    async def body(repeat: int) -> None:
        ran.append(repeat)
        clock.now += 30.0  # each repeat takes 30 s of the budget

    asyncio.run(gpu._repeated("long", body, 5, budget, results))
    # 100 s, 20 s kept back: after two repeats 40 s are left, less than 20 + 33 for a third.
    assert ran == [0, 1]
    assert results.data["steps"]["long"]["status"] == "cut off"
    assert results.data["steps"]["long"]["repeats"] == 2


def test_a_repeat_that_overruns_is_cut_off_and_what_finished_is_kept() -> None:
    budget = gpu.Budget(21.5)  # the real clock: 1.5 s past the reserve
    results = gpu.PartialResults(Path("/nonexistent/a.json"), Path("/nonexistent/a.txt"), budget)
    results.write = lambda: None  # type: ignore[method-assign]

    async def body(repeat: int) -> None:
        await asyncio.sleep(30.0)

    asyncio.run(gpu._repeated("clips_100", body, 3, budget, results, min_repeat_s=0.0))
    assert results.data["steps"]["clips_100"] == {
        "status": "cut off",
        "at_s": pytest.approx(1.5, abs=0.5),
        "repeats": 0,
        "reason": "the time budget ran out mid-repeat",
    }


def test_no_repeat_starts_in_less_time_than_any_takes() -> None:
    clock = FakeClock()
    budget = gpu.Budget(25.0, clock=clock)  # 5 s past the reserve: less than a repeat's least
    results = gpu.PartialResults(Path("/nonexistent/b.json"), Path("/nonexistent/b.txt"), budget)
    results.write = lambda: None  # type: ignore[method-assign]
    ran: list[int] = []

    async def body(repeat: int) -> None:
        ran.append(repeat)

    asyncio.run(gpu._repeated("clips_300", body, 3, budget, results))
    assert ran == [] and results.data["steps"]["clips_300"]["status"] == "cut off"


def test_the_tuned_table_takes_the_smallest_batch_near_the_fastest() -> None:
    measured = {
        (30.0, 8): (0.50, 0.5),
        (30.0, 16): (0.49, 0.5),  # within 5 % of 16's: 8 is enough
        (120.0, 8): (2.0, 2.0),
        (120.0, 16): (1.2, 1.2),
        (120.0, 32): (1.19, 1.2),
        (600.0, 16): (6.0, 6.0),
        (600.0, 32): (3.0, 3.0),
    }
    table = tuned_table(measured)
    assert table == ((30.0, 8), (120.0, 16), (math.inf, 32))
    assert check_batch_table(table) is None
    assert format_table(table) == "30:8,120:16,inf:32"


def test_rows_with_the_size_of_the_next_are_merged() -> None:
    measured = {
        (30.0, 16): (1.0, 1.0),
        (120.0, 16): (2.0, 2.0),
        (300.0, 32): (3.0, 3.0),
        (600.0, 32): (5.0, 5.0),
    }
    assert tuned_table(measured) == ((120.0, 16), (math.inf, 32))
    with pytest.raises(ValueError):
        tuned_table({})


def test_without_cuda_it_stops_at_once_and_says_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import ctranslate2

    if ctranslate2.get_cuda_device_count() > 0:
        pytest.skip("this machine has a CUDA device: the check passes here")
    out = tmp_path / "gpu.json"
    assert gpu.main(["--out", str(out)]) == 2
    assert "no CUDA device" in capsys.readouterr().err
    written = json.loads(out.read_text())
    assert written["complete"] is False
    assert written["steps"]["device"]["status"] == "failed"
    assert "make bench" in written["steps"]["device"]["error"]


def test_spreads_report_median_and_range() -> None:
    figure = repeats.spread([1.2, 0.9, 1.5])
    assert (figure.median, figure.low, figure.high) == (1.2, 0.9, 1.5)
    assert figure.shown() == "1.200 [0.900-1.500] x3"
    assert repeats.order(0, "plain", "pipeline") == ("plain", "pipeline")
    assert repeats.order(1, "plain", "pipeline") == ("pipeline", "plain")
    assert repeats.percentile([10.0, 20.0, 30.0, 40.0], 50) == 25.0
    assert repeats.percentile([10.0, 20.0, 30.0, 40.0], 99) == pytest.approx(39.7)
