"""The benchmark's short table: what `make bench` prints and docs/benchmark.md keeps."""

from __future__ import annotations


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
    return "\n".join(lines)
