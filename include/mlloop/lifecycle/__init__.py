"""Lifecycle and governance: retention of stored data, archival of model versions, platform cleanup.

``retention`` plans what expires in each zone and why the rest is kept; ``holds`` says what must never be
deleted (what the champion and previous versions need, legal holds); ``versions`` archives model versions
by rule; ``cleanup`` removes old MLflow runs and Airflow metadata; ``runner`` is what the
``housekeeping_<use case>`` DAG and ``mlloop housekeeping`` call. See docs/lifecycle.md.
"""
