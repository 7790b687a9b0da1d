"""The tamper-evident access log: one chained record per operation, signed checkpoints.

Modules, one job each: ``record`` (what a record holds, its canonical form and chain hash),
``store`` (the tables), ``writer`` (group-committing appender), ``checkpoint`` (Ed25519-signed
heads), ``checkpoint_file`` (their copy outside the database), ``scheduler`` (the gateway signs
them on its own), ``verify`` (walks the chain and the checkpoints), ``retention`` (pruning at a
checkpoint), ``reader`` (the auditor's searches), ``refusals`` (floods of refusals counted),
``middleware`` (one record per /graphql request), ``page`` (the auditors' web page),
``service`` (the wiring the gateway starts), ``commands`` (``switchboard audit``).
See docs/audit.md.
"""
