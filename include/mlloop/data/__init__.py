"""Data sources for the demo loop: the synthetic card-transaction generator (``mlloop.data.generator``)."""
