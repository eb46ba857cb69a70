"""The scoring service: one process serves every enabled use case at ``POST /predict/<use_case>``.

Each use case follows its own ``models:/<name>@champion`` and logs what it sees under its own dataset.
Light to import; the app (FastAPI, pandas, the models) loads in ``mlloop.serving.app``.
"""
