"""The churn API: serves the registry's production model and follows its promotions live."""
