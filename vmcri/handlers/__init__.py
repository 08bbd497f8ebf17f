"""Sandbox backends and the registry that picks one per RuntimeClass handler."""
