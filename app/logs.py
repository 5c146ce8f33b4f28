"""One log format for every process: time, level, component, message (order lines carry order_id=)."""

from __future__ import annotations

import logging
import os
import sys

from app.redact import RedactingFilter

LOG_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(
        level=level.upper(),
        stream=sys.stderr,
        format=LOG_FORMAT,
        force=True,
    )
    for handler in logging.getLogger().handlers:
        handler.addFilter(RedactingFilter())
    # aiokafka is chatty at INFO (every join, every metadata refresh).
    logging.getLogger("aiokafka").setLevel(logging.WARNING if level.upper() != "DEBUG" else logging.DEBUG)



def worker_logging_config(level: str = "INFO") -> dict[str, object]:
    """dictConfig for the Faust worker: our lines at `level`, faust/mode/aiokafka internals at WARNING."""
    quiet = "WARNING" if level.upper() != "DEBUG" else "DEBUG"
    # Chasing a consumer problem: MAGQB_FRAMEWORK_LOG_LEVEL=INFO (with DEVLOG=1 for faust's dev lines).
    quiet = os.environ.get("MAGQB_FRAMEWORK_LOG_LEVEL", quiet).upper()
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"format": LOG_FORMAT}},
        "filters": {"redact": {"()": RedactingFilter}},
        "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain", "stream": "ext://sys.stderr",
                                "filters": ["redact"]}},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        # faust services log as their class's module: our subclasses of its App and Consumer too.
        "loggers": {name: {"level": quiet} for name in ("faust", "mode", "aiokafka", "app.worker_app",
                                                         "app.adapters.faust_consumer")},
    }
