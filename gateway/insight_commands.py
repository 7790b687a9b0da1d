"""`switchboard insight check | explain | train`: the operator's tools for the insight rules.

- ``check [FILE]``: the rules file (and the churn model it names), file:line per problem.
- ``explain --customer <hub id or MSISDN>``: reads the customer's records from the legacy
  systems (the settings' backends and crosswalk) and says why they got each tag, tier, segment,
  stage and score, with the figures. Like ``policy explain`` it prints no personal data in
  clear: the customer is shown by a masked reference (``cus_****1a2b``, ``138****5678``),
  and the figures and reasons are counts and amounts, never names, numbers or free text.
- ``train``: fits the churn model on the simulators' labelled history and writes the model
  file (coefficients as data), printing the holdout AUC.
"""

from __future__ import annotations

import argparse
import asyncio
import re
from datetime import date
from pathlib import Path
from typing import Any

from adapters.declared.yaml_lines import DeclarationInvalid

HUB_ID = re.compile(r"^cus_[0-9a-f]{20}$")
MSISDN = re.compile(r"^\+?[0-9]{6,15}$")


def _rules_path(args: argparse.Namespace) -> Path:
    from gateway.settings import load_settings
    from insight.rules import DEFAULT_RULES_FILE

    if getattr(args, "file", None):
        return Path(args.file)
    if getattr(args, "rules", None):
        return Path(args.rules)
    return load_settings().insight_rules_file or DEFAULT_RULES_FILE


def _check(args: argparse.Namespace) -> int:
    from insight.rules import load_rules

    path = _rules_path(args)
    try:
        rules = load_rules(path)
    except DeclarationInvalid as invalid:
        for problem in invalid.problems:
            print(problem)
        print(f"{path}: refused ({len(invalid.problems)} error(s))")
        return 1
    auc = rules.churn.model.trained.get("holdout_auc")
    print(
        f"{path}: ok, version {rules.version}: {len(rules.value_tiers)} value tiers, "
        f"{len(rules.rfm.segments)} rfm segments, {len(rules.lifecycle)} lifecycle rules, "
        f"{len(rules.tags)} tags; churn model {Path(rules.churn.model.file).name} "
        f"({len(rules.churn.model.features)} features, holdout AUC {auc})"
    )
    return 0


def masked_reference(customer: str) -> str:
    """How explain names the customer it was given: never the whole id or number."""
    from policies.masks import mask_mobile

    if HUB_ID.match(customer):
        return f"cus_****{customer[-4:]}"
    return mask_mobile(customer)


async def _explain_async(args: argparse.Namespace) -> int:
    from adapters.errors import AdapterError, NotFound
    from adapters.identity import CustomerKeys
    from gateway.backends import build_backends, insight_engine
    from gateway.database import create_engine
    from gateway.migrate import require_head
    from gateway.settings import load_settings
    from insight.rules import load_rules

    customer = args.customer.strip()
    shown = masked_reference(customer)
    if not HUB_ID.match(customer) and not MSISDN.match(customer):
        print("--customer takes a hub id (cus_ + 20 hex digits) or an MSISDN")
        return 2
    rules = load_rules(_rules_path(args))
    settings = load_settings()
    engine = create_engine(settings.database_url)
    wiring = build_backends(settings, engine)
    backends = wiring.backends
    try:
        await require_head(engine)  # read only: the schema is `switchboard migrate`'s
        for adapter in (backends.customer_system, backends.billing, backends.care):
            await adapter.start()
        hub_id = customer
        if not HUB_ID.match(customer):
            try:
                line = await backends.customer_system.find_subscription_by_msisdn(customer)
            except NotFound:
                print(f"no line {shown} in the customer system")
                return 1
            known = await backends.identity_store.by_customer_nos([line.customer_no])
            if line.customer_no not in known:
                # First sight: link the customer as the graph would.
                profiles = await backends.customer_system.get_customers([line.customer_no])
                lines = await backends.customer_system.get_subscriptions([line.customer_no])
                profile = profiles[line.customer_no]
                keys = CustomerKeys(
                    line.customer_no,
                    profile.certificate_no,
                    tuple(s.msisdn for s in lines.get(line.customer_no, ())),
                )
                known = await backends.identity_resolver.resolve([keys])
            hub_id = known[line.customer_no].hub_id
        found = await insight_engine(backends, rules).insights([hub_id])
        if hub_id not in found:
            print(f"the hub does not know customer {shown}")
            return 1
        _print_insight(rules, found[hub_id], masked_reference(hub_id))
        return 0
    except AdapterError as error:
        print(f"cannot read the customer's records: {error.code} ({error.system})")
        return 1
    finally:
        await wiring.close()
        await engine.dispose()


def _print_insight(rules: Any, insight: Any, who: str) -> None:
    print(f"insight rules {rules.version} ({rules.file}); customer {who}")
    print("figures:")
    for name, value in insight.figures.items():
        print(f"  {name:<20} {value:g}")
    risk = insight.churn_risk
    print(f"value tier      {insight.value_tier:<14} because {insight.why['value_tier']}")
    print(
        f"rfm             {insight.rfm.segment:<14} "
        f"R{insight.rfm.recency} F{insight.rfm.frequency} M{insight.rfm.monetary}: "
        f"{insight.why['rfm'].split(': ', 1)[1]}"
    )
    print(f"churn risk      {risk.level:<14} because {insight.why['churn_risk']}")
    print(f"lifecycle stage {insight.lifecycle_stage:<14} because {insight.why['lifecycle_stage']}")
    if not insight.tags:
        print("tags            (none)")
    for tag in insight.tags:
        print(f"tag             {tag:<14} because {insight.why['tag ' + tag]}")


def _explain(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_explain_async(args))
    except DeclarationInvalid as invalid:
        for problem in invalid.problems:
            print(problem)
        return 1


def _train(args: argparse.Namespace) -> int:
    try:
        from insight.train import train, write_model
    except ImportError:  # pragma: no cover - the lock file's `train` group is missing
        print("training needs scikit-learn (the `train` dependency group): make env")
        return 2
    from insight.rules import DEFAULT_RULES_FILE

    out = Path(args.out) if args.out else DEFAULT_RULES_FILE.with_name("churn-model.json")
    trained = train(args.seed, args.customers, date.fromisoformat(args.as_of))
    write_model(trained, out)
    rate = trained.model["trained"]["churn_rate"]
    print(
        f"{out}: trained on {args.customers} customers of seed {args.seed} "
        f"(churn rate {rate:.1%}); holdout AUC {trained.holdout_auc:.4f}"
    )
    return 0


def add_insight_commands(commands: Any) -> None:
    insight = commands.add_parser(
        "insight", help="check and explain the customer insight rules; train the churn model"
    )
    sub = insight.add_subparsers(dest="insight_command", required=True, metavar="ACTION")
    check = sub.add_parser("check", help="validate an insight rules file (file:line)")
    check.add_argument("file", nargs="?", help="rules file (default: the settings' or bundled)")
    check.set_defaults(run=_check)
    explain = sub.add_parser(
        "explain", help="why a customer got each tag, tier, segment, stage and churn score"
    )
    explain.add_argument("--customer", required=True, help="hub id (cus_...) or MSISDN")
    explain.add_argument("--rules", help="rules file (default: the settings' or bundled)")
    explain.set_defaults(run=_explain)
    train = sub.add_parser("train", help="fit the churn model on the simulators' history")
    train.add_argument("--seed", type=int, default=42, help="dataset seed (default 42)")
    train.add_argument("--customers", type=int, default=20000, help="history size")
    train.add_argument(
        "--as-of", default="2026-11-20", help="the history's date (the dataset's as-of day)"
    )
    train.add_argument("--out", help="model file (default: insight/rules/churn-model.json)")
    train.set_defaults(run=_train)
