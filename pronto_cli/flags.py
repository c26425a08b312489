"""Command-line flags generated from pydantic-settings classes.

Every setting is a field of one ``BaseSettings`` class per process, read from
``PRONTO_*`` environment variables. ``add_settings_arguments`` exposes each
field as a ``--flag`` whose help text is the field's description, so flags,
environment variables and documentation cannot drift apart. Values given on
the command line win over the environment, which wins over defaults.
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from typing import Any, TypeVar

from pydantic_core import PydanticUndefined
from pydantic_settings import BaseSettings

__all__ = ["add_settings_arguments", "settings_from_args"]

S = TypeVar("S", bound=BaseSettings)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _is_list(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_list(a) for a in typing.get_args(annotation) if a is not type(None))
    return origin in (list, tuple, set)


def _is_dict(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_is_dict(a) for a in typing.get_args(annotation) if a is not type(None))
    return origin is dict or annotation is dict


def _is_bool(annotation: Any) -> bool:
    return annotation is bool


def _show(default: Any) -> str:
    if isinstance(default, dict | list) and not default:
        return "none"
    if isinstance(default, dict | list):
        return json.dumps(default)
    return str(default)


def add_settings_arguments(
    parser: argparse.ArgumentParser, settings_cls: type[BaseSettings]
) -> None:
    """Add one ``--flag`` per settings field (default ``None`` = not given)."""
    prefix = str(settings_cls.model_config.get("env_prefix", "")).upper()
    for name, field in settings_cls.model_fields.items():
        env = prefix + name.upper()
        default = field.get_default(call_default_factory=True)
        help_text = (field.description or "").strip()
        shown = "" if default in (None, PydanticUndefined) else f" (default: {_show(default)})"
        help_text = f"{help_text}{shown} [env {env}]"
        if _is_bool(field.annotation):
            parser.add_argument(
                _flag(name),
                dest=name,
                default=None,
                action=argparse.BooleanOptionalAction,
                help=help_text,
            )
        elif _is_dict(field.annotation):
            parser.add_argument(
                _flag(name),
                dest=name,
                default=None,
                type=json.loads,
                metavar="JSON",
                help=help_text,
            )
        elif _is_list(field.annotation):
            parser.add_argument(_flag(name), dest=name, default=None, nargs="+", help=help_text)
        else:
            parser.add_argument(_flag(name), dest=name, default=None, help=help_text)


def settings_from_args(settings_cls: type[S], args: argparse.Namespace) -> S:
    """Build settings: explicit flags, then ``PRONTO_*`` variables, then defaults."""
    given = {
        name: getattr(args, name)
        for name in settings_cls.model_fields
        if getattr(args, name, None) is not None
    }
    return settings_cls(**given)
