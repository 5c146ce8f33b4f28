"""`magqb console`: the bookkeeper's web console (server-rendered pages over the operator tools' service
functions in app/tools/, the same code `magqb status`, `dlq` and `reconcile` run)."""
