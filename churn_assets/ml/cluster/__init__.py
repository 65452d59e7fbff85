"""Work spread over a Dask cluster: the engine that picks one, and what runs per partition."""
