"""Example third-party cdp connector (Exemplo CRM contacts)."""
