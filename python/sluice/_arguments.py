"""Checks of the arguments of ``StreamingDataPipeline``'s calls, before any data is read:
each bad value is refused with the exception a Python caller expects (``TypeError`` for a
wrong type, ``ValueError`` for a wrong value, ``NotImplementedError`` for what a
distributed run cannot do yet)."""

from __future__ import annotations

import os
from typing import Any, List, Optional

ON_ERROR = ("fail", "skip", "pass_through", "dead_letter:DIR")


def _normalize_on_error(on_error: Any) -> str:
    if not isinstance(on_error, str):
        raise TypeError(f"on_error must be a string, one of {ON_ERROR}; got {type(on_error).__name__}")
    policy = on_error.strip()
    for prefix in ("dead_letter:", "dead-letter:", "dead_letter=", "dead-letter="):
        if policy.startswith(prefix):
            directory = policy[len(prefix):]
            if not directory:
                raise ValueError("on_error='dead_letter:DIR' needs a folder after the colon")
            return "dead_letter=" + directory
    policy = policy.replace("-", "_")
    if policy not in ("fail", "skip", "pass_through"):
        raise ValueError(f"unknown on_error policy {on_error!r}; expected one of {ON_ERROR}")
    return policy


def _paths(file_path: Any) -> List[str]:
    if isinstance(file_path, (str, os.PathLike)):
        return [os.fspath(file_path)]
    if isinstance(file_path, (list, tuple)) and file_path:
        out = []
        for p in file_path:
            if not isinstance(p, (str, os.PathLike)):
                raise TypeError(f"file_path entries must be paths (str or os.PathLike), got {type(p).__name__}")
            out.append(os.fspath(p))
        return out
    raise TypeError(
        f"file_path must be a path, a glob or a non-empty list of them, got {type(file_path).__name__}"
    )


def _output_path(output_path: Any) -> Optional[str]:
    if output_path is None:
        return None
    if not isinstance(output_path, (str, os.PathLike)):
        raise TypeError(f"output_path must be a folder path (str or os.PathLike), got {type(output_path).__name__}")
    return os.fspath(output_path)


def _check_sql_windows(sql_windows: Any, sql: Any) -> None:
    if sql_windows not in ("chunk", "global"):
        raise ValueError(f"sql_windows must be 'chunk' or 'global', got {sql_windows!r}")
    if sql_windows == "global" and sql is None:
        raise ValueError("sql_windows='global' needs sql=")


def _check_output_mode(out: Optional[str], overwrite: Any, resume: Any) -> None:
    if not isinstance(overwrite, bool) or not isinstance(resume, bool):
        raise TypeError("overwrite and resume must be True or False")
    if overwrite and resume:
        raise ValueError("give overwrite=True or resume=True, not both")
    if resume and out is None:
        raise ValueError("resume=True needs output_path: it continues the run written there")


def _refuse_distributed(sql_windows: str, resume: bool) -> None:
    """What a distributed run cannot do yet, refused before any task starts."""
    if resume:
        raise NotImplementedError("resume=True is for runs on one machine (enable_distributed=False)")
    if sql_windows == "global":
        # Each task would see only its partition: per-partition values, silently wrong.
        raise NotImplementedError(
            "sql_windows='global' does not run distributed yet: each task would compute the "
            "windows over its own partition, not the whole input. Run it on one machine "
            "(enable_distributed=False), where both passes cover every row."
        )


def _sql_text(sql: Any) -> Optional[str]:
    if sql is None:
        return None
    if isinstance(sql, os.PathLike):
        with open(sql, encoding="utf-8") as f:
            return f.read()
    if not isinstance(sql, str):
        raise TypeError(f"sql must be the query text (str) or a path to a .sql file, got {type(sql).__name__}")
    if not sql.strip():
        raise ValueError("sql is empty")
    return sql
