"""mlserving: the model server, router and online learner deployed by mlrollouts."""

__version__ = "0.1.0"
