"""Pure reconcile logic: spec → desired children, plan, next status. No kopf, no I/O."""
