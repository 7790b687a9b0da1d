"""Customer insight: tags, value tiers, RFM, lifecycle stages and churn risk, rules as data.

Layer: beside ``schema/`` and ``orchestration/`` (imports ``adapters`` only; the schema and the
campaigns call it). ``provider.InsightEngine`` is the entry point; docs/insight.md.
"""
