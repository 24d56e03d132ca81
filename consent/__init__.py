"""Consent ledger and data-subject requests (LGPD). Consent signals already
arrive with records and are stored encrypted with them; the append-only
ledger that decides what may be used is built here."""
