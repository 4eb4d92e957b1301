"""Reference systems built only from the public API (fraud detection first)."""
