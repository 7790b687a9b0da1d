"""Marketing: business events from the legacy systems and what the hub does with them.

Layer: like ``orchestration/`` (may import orchestration, policies, adapters, insight; imported
by schema and gateway). See docs/marketing.md.
"""
