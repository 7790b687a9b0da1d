"""The benchmark's short table: what `make bench` prints and docs/benchmark.md keeps."""

from __future__ import annotations

import json
import statistics


def _calls(row: dict) -> str:
    calls = row.get("calls_per_op")
    if not calls:
        return ""
    return " / ".join(f"{calls[k]:g}" for k in ("boss", "billing", "care"))


def _rows(title: str, rows: dict[str, dict]) -> list[str]:
    lines = [
        f"| {title} | req/s | p50 ms | p95 ms | p99 ms | errors "
        "| calls per op (BOSS / billing / care) | gateway CPU ms per op |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, s in rows.items():
        lines.append(
            f"| {name} | {s['throughput_rps']} | {s['p50_ms']} | {s['p95_ms']} | "
            f"{s['p99_ms']} | {s['errors']} | {_calls(s)} | {s.get('gateway_cpu_ms_per_op', '')} |"
        )
    return lines


def table(result: dict) -> str:
    load = result["load"]
    lines = [
        f"load: {load['generator']}, {load['concurrency']} connections, "
        f"{load['rounds']} x {load['seconds_per_phase']} s per side, "
        f"{load['gateway_workers']} gateway worker(s); "
        f"dataset {result['dataset']['customers']:,} customers",
        "",
        *_rows("under load", result["scenarios"]),
        "",
        *_rows("sequential (one client)", result["sequential"]),
        "",
        "| page size | ms per page | calls per page (BOSS / billing / care) |",
        "|---|---|---|",
    ]
    for row in result["page_scale"]:
        lines.append(f"| {row['page_size']} | {row['mean_ms']} | {_calls(row)} |")
    lines += [
        "",
        "| customers | 360 p50 ms | 360 calls (BOSS / billing / care) | page of 50 ms | "
        "page calls |",
        "|---|---|---|---|---|",
    ]
    for size, rows in result["datasets"].items():
        one, page = rows["360, sequential"], rows["page of 50, sequential"]
        lines.append(
            f"| {int(size):,} | {one['p50_ms']} | {_calls(one)} | {page['mean_ms']} | "
            f"{_calls(page)} |"
        )
    if result.get("workflows"):
        lines += [
            "",
            "| plan change (mutation + durable workflow) | workflows | in flight | "
            "all accepted after s | all final after s | workflows/s |",
            "|---|---|---|---|---|---|",
        ]
        for row in result["workflows"]:
            lines.append(
                f"| {row['backend']} | {row['workflows']} | {row['concurrency']} | "
                f"{row['submit_s']} | {row['seconds']} | {row['workflows_per_s']} |"
            )
    churn = result.get("churn_model")
    if churn:
        lines += [
            "",
            f"churn model: holdout AUC {churn['holdout_auc']} retrained now "
            f"({churn.get('skipped') or 'scikit-learn'}; {churn['customers']} customers, seed "
            f"{churn['seed']}, as of {churn['as_of']}); the shipped model file records "
            f"{churn['shipped_holdout_auc']}",
        ]
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    for name, (value, met) in result["targets"].items():
        lines.append(f"| {name} | {value} | {'yes' if met else 'no'} |")
    lines.append("")
    for name, value in result["ratios"].items():
        lines.append(f"- {name}: **{value}**")
    if "peer" in result:
        lines += ["", peer_table(result["peer"])]
    return "\n".join(lines)


def _spread(summary: dict, key: str, digits: int) -> str:
    figure = summary.get(key)
    if not figure:
        return ""
    return f"{figure['median']:.{digits}f} ({figure['min']:.{digits}f}-{figure['max']:.{digits}f})"


def _times(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def peer_table(peer: dict) -> str:
    """The ours/peer side-by-side (bench/peer): per scenario the medians (min-max over the
    rounds), the ratios, and issue 12's goal rows."""
    if "skipped" in peer or "failed" in peer:
        return f"side by side with the peer: {'skipped' if 'skipped' in peer else 'failed'}: " + (
            peer.get("skipped") or peer.get("failed") or ""
        )
    load = peer["load"]
    cache_max = peer.get("peer_cache_max")
    lines = [
        f"side by side with the peer (GraphQL Mesh + Hive Gateway): {load['generator']} "
        f"-c{load['concurrency']}, {load['rounds']} x {load['seconds_per_run']} s per side, "
        f"interleaved peer, ours, ...; {peer['dataset']['sampled']} rotating customers of "
        f"{peer['dataset']['customers']:,}; peer cache store "
        f"{f'{cache_max:,}' if cache_max else 'its default'} entries; load average "
        f"{' '.join(map(str, peer.get('load_average_start', [])))} at the start",
    ]
    eq = peer.get("equivalence")
    if eq:
        differing = ", ".join(f"{k} {v}" for k, v in eq["differing"].items()) or "none"
        lines.append(
            f"same answer: {eq['same']} of {eq['compared']} customers identical after "
            f"normalisation (fields differing: {differing})"
        )
    page = peer.get("page_equivalence")
    if page:
        lines.append(
            f"same page of 50: {'yes' if page['same'] else 'no'} ({json.dumps(page)[:300]})"
        )
    lines += [
        "",
        "| scenario | gateway | req/s | p50 ms | p99 ms | gateway CPU ms/req | gateway RSS MB "
        "| sims CPU ms/req | calls/req (BOSS / billing / care) | errors/requests |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, sc in peer["scenarios"].items():
        for side in ("peer", "ours"):
            s = sc[side]
            calls = " / ".join(f"{s['calls_per_op'][k]:g}" for k in ("boss", "billing", "care"))
            lines.append(
                f"| {name} | {side} | {_spread(s, 'throughput_rps', 1)} | {_spread(s, 'p50_ms', 2)}"
                f" | {_spread(s, 'p99_ms', 1)} | {_spread(s, 'gateway_cpu_ms_per_op', 2)} | "
                f"{_spread(s, 'gateway_rss_mb', 0)} | {_spread(s, 'sims_cpu_ms_per_op', 2)} | "
                f"{calls} | {s['errors']}/{s['requests']} |"
            )
    lines += [
        "",
        "| ours/peer (medians) | throughput | p50 | p99 | gateway CPU per request | RSS "
        "| per-round throughput |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, sc in peer["scenarios"].items():
        r = sc["ratios"]
        rounds = ", ".join(_times(x) for x in sc["round_ratios"]["throughput_rps"])
        lines.append(
            f"| {name} | {_times(r['throughput_rps'])} | {_times(r['p50_ms'])} | "
            f"{_times(r['p99_ms'])} | {_times(r['gateway_cpu_ms_per_op'])} | "
            f"{_times(r['gateway_rss_mb'])} | {rounds} |"
        )
    lines += ["", "| goal (issue 12) | ours/peer | met |", "|---|---|---|"]
    for name, value, met in peer["goals"]:
        lines.append(f"| {name} | {_times(value)} | {'yes' if met else 'no'} |")
    if not peer["goals"]:
        lines.append("| (none for these scenarios: the issue sets goals for the 360 query) | | |")
    return "\n".join(lines)


def median_table(header: str, unit: str, figures: dict[str, list[float]], digits: int) -> str:
    """A markdown table of each row's median, min and max over its rounds (bench.layers,
    bench.request_cpu)."""
    lines = [f"| {header} | {unit}, median | min | max |", "|---|---|---|---|"]
    for name, values in figures.items():
        low, middle, high = min(values), statistics.median(values), max(values)
        lines.append(f"| {name} | {middle:.{digits}f} | {low:.{digits}f} | {high:.{digits}f} |")
    return "\n".join(lines)
