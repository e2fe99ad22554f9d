"""Table definitions (one module per table)."""
