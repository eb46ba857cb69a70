"""Run the scoring service: ``python -m mlloop.serving [--host H] [--port P]`` (``make serve``)."""

from __future__ import annotations

import argparse
import logging

from mlloop.config import get_settings


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM; on shutdown in-flight requests finish and the inference log is flushed."""
    import uvicorn

    from mlloop.registry.runner import use_configured_mlflow
    from mlloop.serving.app import create_app

    settings = get_settings()
    parser = argparse.ArgumentParser(prog="python -m mlloop.serving", description=__doc__)
    parser.add_argument("--host", default=settings.serving_host, help="bind address (MLLOOP_SERVING_HOST)")
    parser.add_argument("--port", type=int, default=settings.serving_port, help="port (MLLOOP_SERVING_PORT)")
    parser.add_argument("--no-seed-history", action="store_true", help="start with empty entity history")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # models:/ and runs:/ URIs resolve against the global URIs: without this they would point at
    # MLflow's default (a mlflow.db in the working directory), not the configured server.
    use_configured_mlflow()
    # The bind address decides whether API keys are required (MLLOOP_SERVING_AUTH=auto).
    settings = settings.model_copy(update={"serving_host": args.host, "serving_port": args.port})
    app = create_app(settings, seed_history=not args.no_seed_history)
    uvicorn.run(
        app,
        host=args.host,
        port=args.port,
        log_level="warning",
        access_log=False,
        timeout_graceful_shutdown=30,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
