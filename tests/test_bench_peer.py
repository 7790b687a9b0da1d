"""The pure parts of the side-by-side with the peer (bench/peer): ratios, goals, skip reasons,
the answers' normalisation, and the table. No node, no gateway."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from bench import run as bench_run
from bench.peer import mesh
from bench.peer.figures import (
    equivalence,
    goals,
    missing_tools_reason,
    node_version_reason,
    npm_failure_reason,
    page_equivalence,
    parse_scenarios,
    round_ratios,
    scenario_summary,
)
from bench.peer.run import add_arguments
from bench.report import peer_table


def run(gw: str, rps: float, p99: float, cpu: float, rss: float = 100.0) -> dict:
    return {
        "gw": gw,
        "throughput_rps": rps,
        "p50_ms": p99 / 3,
        "p99_ms": p99,
        "gateway_cpu_ms_per_op": cpu,
        "gateway_rss_mb": rss,
        "calls_per_op": {"boss": 2.0, "billing": 2.0, "care": 1.0},
        "errors": 0,
        "requests": int(rps * 10),
    }


scenario = scenario_summary


def test_scenarios_parse_and_reject_typos() -> None:
    assert [s.name for s in parse_scenarios("1:off, 2:on,")] == ["1:off", "2:on"]
    (page,) = parse_scenarios("2:off:page")
    assert page.page and not page.cache and page.title == "2 processes, cache off, page of 50"
    with pytest.raises(ValueError, match="PROCESSES"):
        parse_scenarios("2:yes")
    with pytest.raises(ValueError):
        parse_scenarios("0:off")


def test_ratios_are_of_medians_not_means() -> None:
    # One wild peer round (the machine is shared) must not move the ratio: medians do not.
    runs = [
        run("peer", 300, 60, 4.0),
        run("ours", 600, 50, 2.0),
        run("peer", 30, 600, 40.0),
        run("ours", 620, 55, 2.1),
        run("peer", 310, 62, 4.2),
        run("ours", 640, 58, 2.2),
    ]
    r = scenario(runs)["ratios"]
    assert r["throughput_rps"] == pytest.approx(620 / 300, abs=1e-3)
    assert r["p99_ms"] == pytest.approx(55 / 62, abs=1e-3)
    assert r["gateway_cpu_ms_per_op"] == pytest.approx(2.1 / 4.2, abs=1e-3)
    assert round_ratios(runs, "throughput_rps") == [2.0, pytest.approx(20.667), 2.065]
    assert r["sims_cpu_ms_per_op"] is None  # neither side measured it


def test_goals_cache_off_need_all_three_and_cache_on_only_throughput() -> None:
    met = scenario([run("peer", 300, 60, 4.0), run("ours", 600, 60, 2.0)])
    slow_p99 = scenario([run("peer", 300, 60, 4.0), run("ours", 700, 61, 1.0)])
    cached = scenario([run("peer", 900, 20, 1.0), run("ours", 890, 10, 0.5)])
    rows = goals({"1:off": met, "2:off": slow_p99, "1:on": cached, "2:off:page": met}, 200_000)
    by_name = {g.name: g for g in rows}
    assert [g.met for g in rows[:3]] == [True, True, True]  # 2.0, 1.0 and 0.5 are on the line
    assert [g.met for g in rows[3:6]] == [True, False, True]
    on = rows[6]
    assert len(rows) == 7
    assert "200,000" in on.name and on.value == pytest.approx(0.989, abs=1e-3)
    assert not on.met
    assert "2 processes, cache off: ours/peer p99 <= 1 (ours no slower)" in by_name


def test_skip_reasons() -> None:
    assert missing_tools_reason(lambda tool: f"/usr/bin/{tool}") is None
    reason = missing_tools_reason(lambda tool: None if tool in ("wrk", "node") else "/x")
    assert reason is not None and reason.startswith("node, wrk not found")
    assert "apt-get install -y wrk" in reason
    assert node_version_reason("v20.20.2\n") is None
    assert node_version_reason("v22.1.0") is None
    assert "older than 20" in (node_version_reason("v18.19.0") or "")
    assert node_version_reason("command not found") is not None
    assert npm_failure_reason(0, "added 400 packages") is None
    out = "npm warn EBADENGINE x\nnpm error code ENOTFOUND\nnpm error network request failed\n"
    assert npm_failure_reason(1, out) == (
        "npm ci failed (exit 1): npm error network request failed"
    )


def ours_answer(created: str) -> dict:
    return {
        "data": {
            "customer": {
                "profile": {
                    "customerNo": "1000014593",
                    "name": "苏涛",
                    "certificateNumber": "***9034",
                    "segment": "SENIOR",
                },
                "subscriptions": [
                    {
                        "msisdn": "15720664882",
                        "status": "A",
                        "arpu": "21.28",
                        "offering": {"id": "OF0001", "name": "神州行"},
                    }
                ],
                "billingAccounts": [
                    {
                        "id": "BA1",
                        "state": "active",
                        "paymentMethod": "wechat",
                        "balance": {
                            "amount": {"amount": "0.00", "currency": "CNY"},
                            "overdue": {"amount": "0"},
                        },
                    }
                ],
                "tickets": [
                    {"id": "TT1", "type": "inquiry", "status": "resolved", "createdAt": created}
                ],
            }
        }
    }


def peer_answer(created: str) -> dict:
    customer = {
        "CustomerNo": 1000014593,
        "CustomerName": "苏涛",
        "CertificateNo": "110101195001019034",
        "CustSegment": "SENIOR",
        "lines": [
            {
                "MSISDN": 15720664882,
                "Status": "A",
                "ARPU": 21.28,
                "PrimaryOfferingId": "OF0001",
                "PrimaryOfferingName": "神州行",
            }
        ],
        "billingAccounts": [
            {
                "id": "BA1",
                "state": "active",
                "paymentMethod": "wechat",
                "balance": [{"amount": {"value": 0, "unit": "CNY"}, "overdueAmount": {"value": 0}}],
            }
        ],
        "parties": [
            {
                "id": "P1",
                "tickets": [
                    {
                        "id": "TT1",
                        "ticketType": "inquiry",
                        "status": "resolved",
                        "creationDate": created,
                    }
                ],
            }
        ],
    }
    return {"data": {"customer": {"QueryCustomerResult": {"Customer": [customer]}}}}


def test_equivalence_compares_instants_not_offsets() -> None:
    # Switchboard answers date-times in UTC, care (and so the peer) in +08:00: the same instant.
    same = (
        "1000014593",
        ours_answer("2025-10-11T06:57:32+00:00"),
        peer_answer("2025-10-11T14:57:32+08:00"),
    )
    # An hour apart is a real difference, and reported by field.
    other = (
        "1000014593",
        ours_answer("2025-10-11T07:57:32+00:00"),
        peer_answer("2025-10-11T14:57:32+08:00"),
    )
    broken = ("1", {"errors": [{"message": "x"}]}, peer_answer("2025-10-11T14:57:32+08:00"))
    result = equivalence([same, other, broken])
    assert (result["compared"], result["same"]) == (3, 1)
    assert result["differing"] == {"tickets": 1, "errors": 1}
    assert set(result["diffs"][0]) == {"customerNo", "tickets"}


def test_peer_table_prints_ratios_and_goals_or_the_skip_reason() -> None:
    assert peer_table({"skipped": "wrk not found on PATH"}) == (
        "side by side with the peer: skipped: wrk not found on PATH"
    )
    sc = scenario([run("peer", 300, 60, 4.0, 600), run("ours", 450, 50, 3.0, 150)])
    result = {
        "load": {"generator": "wrk -t2", "concurrency": 10, "rounds": 1, "seconds_per_run": 10},
        "dataset": {"customers": 100_000, "sampled": 199},
        "peer_cache_max": 200_000,
        "load_average_start": [1.5, 1.0, 0.5],
        "scenarios": {"1:off": sc},
        "goals": [[g.name, g.value, g.met] for g in goals({"1:off": sc}, 200_000)],
    }
    text = peer_table(result)
    assert "| 1:off | 1.50 | 0.83 | 0.83 | 0.75 | 0.25 | 1.50 |" in text
    assert "| 1 process, cache off: ours/peer throughput >= 2 | 1.50 | no |" in text
    assert "load average 1.5 1.0 0.5" in text


def bench_args() -> argparse.Namespace:
    """The arguments `python -m bench` passes to the peer scenario, at their defaults."""
    parser = argparse.ArgumentParser()
    add_arguments(parser, prefix="peer-")
    args = parser.parse_args([])
    args.no_peer = False
    args.rounds, args.duration, args.concurrency, args.max_requests = 2, 8.0, 10, 50_000
    args.customers, args.seed, args.sample = 1_000_000, 42, 300
    return args


def test_bench_skips_the_peer_without_its_tools_and_keeps_going(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    args = bench_args()
    monkeypatch.setattr(mesh.shutil, "which", lambda tool: None if tool == "wrk" else "/bin/x")
    assert bench_run.peer_rows(args, Path("/nonexistent")) == {
        "skipped": "wrk not found on PATH (Debian: apt-get install -y wrk)"
    }
    assert "peer scenario skipped: wrk not found" in capsys.readouterr().out
    args.no_peer = True
    assert bench_run.peer_rows(args, Path("/nonexistent")) == {"skipped": "--no-peer"}


def test_page_equivalence_wants_the_same_customers_in_the_same_order() -> None:
    def ours(*numbers: str) -> dict:
        nodes = [
            {
                "profile": {"customerNo": n, "name": "N" + n},
                "subscriptions": [{"msisdn": "139" + n}],
                "billingAccounts": [{"balance": {"amount": {"amount": "1.50"}}}],
                "tickets": [{"id": "TT" + n}],
            }
            for n in numbers
        ]
        return {"data": {"customers": {"nodes": nodes}}}

    def peer(*numbers: str) -> dict:
        rows = [
            {
                "CustomerNo": int(n),
                "CustomerName": "N" + n,
                "lines": [{"MSISDN": int("139" + n)}],
                "billingAccounts": [{"balance": [{"amount": {"value": 1.5}}]}],
                "parties": [{"tickets": [{"id": "TT" + n}]}, {"tickets": []}],
            }
            for n in numbers
        ]
        return {"data": {"page": {"QueryCustomerListResult": {"Customer": rows}}}}

    assert page_equivalence(ours("1", "2"), peer("1", "2"))["same"]
    swapped = page_equivalence(ours("1", "2"), peer("2", "1"))
    assert not swapped["same"] and swapped["differing_positions"] == [0, 1]
    assert not page_equivalence(ours("1", "2"), peer("1"))["same"]
    assert not page_equivalence({"errors": [{}]}, peer("1"))["same"]
