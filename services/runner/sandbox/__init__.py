"""Sandboxes: fresh, locked-down Docker containers, a warm pool, and a requirement-set cache."""
