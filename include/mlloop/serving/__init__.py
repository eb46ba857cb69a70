"""The scoring service: serves ``models:/<name>@champion`` over HTTP, follows the alias, logs what it sees.

Light to import; the app (FastAPI, pandas, the model) loads in ``mlloop.serving.app``.
"""
