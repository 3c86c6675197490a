"""The tracking store: the only MLflow importer, run claims and the store's safety."""
