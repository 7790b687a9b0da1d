"""The tamper-evident access log: one chained record per operation, signed checkpoints.

Modules, one job each: ``record`` (what a record holds, its canonical form and chain hash),
``store`` (the tables), ``writer`` (group-committing appender), ``checkpoint`` (Ed25519-signed
heads), ``verify`` (walks the chain), ``retention`` (pruning at a checkpoint), ``reader`` (the
auditor's searches), ``middleware`` (one record per /graphql request), ``page`` (the auditors'
web page), ``service`` (the wiring the gateway starts), ``commands`` (``switchboard audit``).
See docs/audit.md.
"""
