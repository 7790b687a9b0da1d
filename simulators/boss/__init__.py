"""The simulated BOSS: SOAP 1.1 BossService (WSDL, XSD, operations, store)."""
