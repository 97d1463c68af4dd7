"""Shared pure pieces every other package builds on: API names, durations, verdicts, events and
Kubernetes conditions. Nothing here reads a clock or talks to a server."""
