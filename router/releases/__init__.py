"""Releases of the FCSDK libraries: the model, the store, fetching, caching, the service."""
