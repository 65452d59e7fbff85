"""Plain ML code with no Dagster imports: the data contract, cleaning, training, registry."""
