"""mlrollouts: a Kubernetes operator that takes machine-learning models to production safely."""

__version__ = "0.1.0"
