"""The pure parts of ``benchmarks/bench.py`` that decide what a multi-round run reports:
``--variant`` parsing and the within-round ratios. The bench itself runs against the real
servers; nothing here needs one.
"""

from __future__ import annotations

import argparse
from typing import Any

import pytest

from tests.benchmark_util import load_benchmark

bench = load_benchmark("bench")


def _run(design: str, round_no: int, peak: float, *, variant: str | None = None,
         workers: int | None = 2, concurrency: int | None = None,
         p99: float | None = None) -> dict[str, Any]:
    config = f"orchestrator W={workers}" if design == "orchestrator" else \
        f"{design} C={concurrency}"
    if variant:
        config += f" [{variant}]"
    return {"design": design, "config": config, "label": f"{config} #{round_no}",
            "round": round_no, "variant": variant, "tracing": False,
            "workers": workers if design == "orchestrator" else None,
            "peak": {"payments_per_s": peak, "service_cpu_ms_per_payment": 1000 / peak},
            "rate": {"p99_ms": p99} if p99 is not None else None}


def test_variant_parses_name_and_settings() -> None:
    v = bench.variant("sb0fw:TABLE_STANDBY_REPLICAS=0,CONSUMER_FETCH_MAX_WAIT_MS=500")
    assert v.name == "sb0fw"
    assert v.env == {"TABLE_STANDBY_REPLICAS": "0", "CONSUMER_FETCH_MAX_WAIT_MS": "500"}


@pytest.mark.parametrize("text", ["sb0", "sb0:", ":X=1", "sb0:lower=1", "sb0:X", "a b:X=1"])
def test_variant_rejects_what_it_cannot_apply(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        bench.variant(text)


def test_ratios_compare_within_each_round_not_best_against_best() -> None:
    # Round 2 ran on a machine twice as fast: best-against-best would pair the
    # orchestrator's round 2 with the baseline's round 2 only by luck.
    runs = [_run("orchestrator", 1, 100, p99=80), _run("baseline", 1, 200, concurrency=64),
            _run("orchestrator", 1, 120, variant="fw500", p99=300),
            _run("baseline", 1, 150, concurrency=256),
            _run("baseline", 2, 400, concurrency=64), _run("orchestrator", 2, 240, p99=60),
            _run("orchestrator", 2, 300, variant="fw500", p99=500),
            _run("baseline", 2, 100, concurrency=256)]  # its best differs by round
    summary = bench.rounds_summary(runs)
    ratios = summary["ratios"]
    assert ratios["orchestrator W=2 / baseline (best)"] == \
        {"median": 0.55, "min": 0.5, "max": 0.6, "n": 2}
    assert ratios["orchestrator W=2 [fw500] / orchestrator W=2"] == \
        {"median": 1.23, "min": 1.2, "max": 1.25, "n": 2}
    orchestrator = summary["configs"]["orchestrator W=2"]
    assert orchestrator["peak_payments_per_s"] == {"median": 170, "min": 100, "max": 240,
                                                   "n": 2}
    assert orchestrator["rate_p99_ms"]["median"] == 70
    # A variant is never the design's reference run, however fast it was.
    assert bench.best(runs, "orchestrator")["variant"] is None
    text = bench.describe_rounds(summary)
    assert "orchestrator W=2 [fw500]" in text and "0.55 [0.50-0.60]" in text


def test_a_round_without_its_reference_run_adds_no_ratio() -> None:
    runs = [_run("orchestrator", 1, 100), _run("baseline", 1, 200, concurrency=64),
            _run("baseline", 2, 300, concurrency=64)]  # round 2's orchestrator run failed
    failed = _run("orchestrator", 2, 1)
    failed["peak"] = None
    summary = bench.rounds_summary([*runs, failed])
    assert summary["ratios"]["orchestrator W=2 / baseline (best)"]["n"] == 1


def test_a_variant_is_compared_with_the_default_run_of_its_own_worker_count() -> None:
    runs = [_run("orchestrator", 1, 300, workers=1), _run("orchestrator", 1, 200),
            _run("orchestrator", 1, 250, variant="sb0"),
            _run("orchestrator", 1, 330, workers=1, variant="sb0")]
    ratios = bench.rounds_summary(runs)["ratios"]
    assert ratios["orchestrator W=2 [sb0] / orchestrator W=2"]["median"] == 1.25
    assert ratios["orchestrator W=1 [sb0] / orchestrator W=1"]["median"] == 1.1


def _gc_page(gen2_sum: float, gen2_count: int, gen2_short: int) -> str:
    """A worker's /metrics page with the GC pause histogram (generation 2 as given)."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    registry = CollectorRegistry()
    h = Histogram("python_gc_pause_seconds", "pauses", ["generation"],
                  buckets=(0.01, bench.GC_STALL_S, 0.1), registry=registry)
    h.labels("0").observe(0.001)
    for i in range(gen2_count):
        h.labels("2").observe(0.001 if i < gen2_short else 0.2)
    text = generate_latest(registry).decode()
    # the sum as given (observing fixed values cannot hit it exactly)
    return "\n".join(
        f'python_gc_pause_seconds_sum{{generation="2"}} {gen2_sum}'
        if line.startswith('python_gc_pause_seconds_sum{generation="2"}') else line
        for line in text.splitlines()) + "\n"


def test_gc_figures_are_what_the_workers_spent_between_two_scrapes() -> None:
    before = [bench.parse_gc_pauses(_gc_page(0.5, 2, 1)), bench.parse_gc_pauses(_gc_page(0, 0, 0))]
    after = [bench.parse_gc_pauses(_gc_page(0.9, 5, 2)), bench.parse_gc_pauses(_gc_page(0.3, 1, 0))]
    assert after[0]["gen2_n"] == 5 and after[0]["stalls"] == 3
    figures = bench.gc_figures(before, after)
    assert figures["gc_gen2_s"] == pytest.approx(0.7)   # 0.4 + 0.3
    assert figures["gc_gen2_collections"] == 4          # 3 + 1
    assert figures["gc_stalls"] == 3                    # 2 more over 50 ms + 1
    assert figures["gc_s"] == pytest.approx(0.7)        # generation 0 did not move


def test_latency_timeline_groups_payments_by_when_they_were_sent() -> None:
    sent = {"a": 0.1, "b": 0.4, "c": 0.6, "d": 1.9}
    latency = {"a": 10.0, "b": 30.0, "c": 500.0, "d": 20.0}
    assert bench.latency_timeline(sent, latency) == [
        {"t_s": 0.0, "n": 2, "p50_ms": 20.0, "max_ms": 30.0},
        {"t_s": 0.5, "n": 1, "p50_ms": 500.0, "max_ms": 500.0},
        {"t_s": 1.5, "n": 1, "p50_ms": 20.0, "max_ms": 20.0},
    ]
