"""The `mlrollouts` (and `kubectl-mlrollouts`) command line."""
