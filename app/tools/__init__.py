"""The operator's tools as service functions: import, replay, reconcile, an order's status and the log reader
under it, dead letters, `magqb top`'s view, checkpoints. `app/cli/` (and the console) are thin layers over them."""
