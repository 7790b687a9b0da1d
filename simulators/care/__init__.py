"""The simulated care system: TMF REST parties, trouble tickets and interactions."""
