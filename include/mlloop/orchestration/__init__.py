"""Small pieces shared by DAG files: assets and run-time resolution (kept light for parse time)."""
