"""The operator's runtime: one workqueue and reconcile loop for every kind (:mod:`.controller`) and the
classification of failures (:mod:`.errors`)."""
