"""The model server: a REST front end (``app``: Open Inference Protocol V2 and KServe V1) over a
``DataPlane`` (``dataplane``: the loaded models, readiness, inference and feedback).

Online learning, off unless configured: ``learner`` logs served requests to the online learner
and forwards labelled feedback to it; ``hotload`` swaps in the learner's signed snapshots."""
