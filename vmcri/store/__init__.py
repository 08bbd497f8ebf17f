"""Persistent records of sandboxes and containers, and the store that owns them."""
