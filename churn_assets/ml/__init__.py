"""Plain ML code with no Dagster imports: schema, cleaning, training, evaluation, registry."""
