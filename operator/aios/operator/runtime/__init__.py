"""The operator's runtime: what sits between kopf's watch and the pure reconcile logic.

One watch-fed store per kind (no GET per reconcile), one work queue per kind (one run per
object at a time, events and the kind's periodic tick coalesced), one conditional writer
(status and finalizers, on the stored resourceVersion), and a Lease that decides which
replica acts.
"""
