"""The online learner: joins logged requests with labelled feedback, learns with ``partial_fit``,
logs every joined row to a Delta Lake table and publishes signed, numbered snapshots.

Modules (imported on demand; this package imports nothing heavy, so serving replicas can use the
client side without loading scikit-learn or deltalake):

- ``records``: logged requests as replicas send them; ``join``: the join buffer;
- ``prequential``: test-then-train metrics; ``learner``: the online learner;
- ``datalog``: the production-data log; ``manifest`` and ``snapshots``: signed snapshots;
- ``location``: the storage URI and its layout; ``settings``: flags and ``MLLEARNER_*`` variables;
- ``pipeline``: the background work; ``service`` and ``metrics``: the HTTP API and its metrics;
- ``cli``: ``mlserving learn`` (also ``python -m mlserving.learning``);
- ``shipper``: sends logged requests from a replica; ``follower``: hot-loads snapshots in a replica.
"""
