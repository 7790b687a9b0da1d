"""The simulated billing system: TMF REST accounts, bills, balances and payments."""
