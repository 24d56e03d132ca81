"""First-party plugins. Each registers through the `cdp.plugins` entry-point
group in pyproject.toml, exactly as a third-party package would."""
