"""Service: Ray (connection, progress callbacks), MLflow tracking, plots, the installed stack check."""
