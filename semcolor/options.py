"""Options declared once: a config's fields carry their help and default, and the CLI is built from them.

A dataclass field made with :func:`option` (or a pydantic ``Field`` with a ``description``) becomes a command-line
option of the same name (``batch_size`` -> ``--batch-size``), with its type, choices and default taken from the
field; ``--help`` prints the default beside the help. :func:`config_from_args` builds the config back from the
parsed arguments, so a default or a help text is never written twice.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import MISSING, dataclass
from typing import Any

_CLI = "semcolor_cli"


def parse_count_range(text: str | int, what: str) -> int | tuple[int, int]:
    """``"4"`` (or 4) -> 4; ``"1:4"`` -> (1, 4). Raises ValueError naming ``what`` and the valid forms."""
    try:
        if isinstance(text, str) and ":" in text:
            lo, hi = (int(v) for v in text.split(":", 1))
            if not 1 <= lo <= hi:
                raise ValueError
            return lo, hi
        if int(text) < 1:
            raise ValueError
        return int(text)
    except ValueError:
        raise ValueError(f"{what} must be N >= 1 or MIN:MAX with 1 <= MIN <= MAX, got {text!r}") from None


def option(default: Any = MISSING, *, help: str, flag: str | None = None, choices: Sequence[Any] | None = None,
           positional: bool = False) -> Any:
    """A dataclass field that is also a command-line option.

    ``default``: MISSING makes it required. ``flag``: the option string (default ``--field-name``).
    ``positional``: an argument without a flag.
    """
    meta = {_CLI: {"help": help, "flag": flag, "choices": tuple(choices) if choices else None,
                   "positional": positional}}
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class OptionSpec:
    """One command-line option as built from a config field."""

    name: str
    help: str
    default: Any
    """MISSING when required."""
    type: Callable[[str], Any] | None
    flag: str | None
    choices: tuple[Any, ...] | None
    positional: bool
    is_bool: bool
    repeatable: bool = False
    """A ``list[...]`` field: the option may be given several times (``--photos A --photos B``)."""

    @property
    def dest(self) -> str:
        """The attribute of the parsed arguments: the field's name, or the renamed flag's (so that two configs'
        fields of one name, such as a replica's and a local Ray's ``num_cpus``, never share one)."""
        return self.flag.lstrip("-").replace("-", "_") if self.flag else self.name


def _base_type(annotation: Any) -> Any:
    """``int | None`` -> int; ``Literal[...]`` stays; other annotations as they are."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else str  # e.g. int | Literal["auto"]: the config validates it
    return annotation


def _list_item(base: Any) -> Any:
    """``list[str]`` -> str; None for anything else."""
    return typing.get_args(base)[0] if typing.get_origin(base) is list and typing.get_args(base) else None


def _converter(base: Any) -> Callable[[str], Any] | None:
    if _list_item(base) is not None:
        return _converter(_list_item(base))
    if base in (int, float, str):
        return base
    if typing.get_origin(base) is typing.Literal:
        return str
    return None


def _spec(name: str, annotation: Any, default: Any, meta: dict[str, Any]) -> OptionSpec:
    base = _base_type(annotation)
    choices = meta.get("choices")
    if choices is None and typing.get_origin(base) is typing.Literal:
        choices = tuple(typing.get_args(base))
    return OptionSpec(name=name, help=meta["help"], default=default, type=_converter(base), flag=meta.get("flag"),
                      choices=choices, positional=bool(meta.get("positional")), is_bool=base is bool,
                      repeatable=_list_item(base) is not None)


def option_specs(cls: type) -> list[OptionSpec]:
    """The command-line options a config class declares: a dataclass with :func:`option` fields, or a pydantic
    model whose fields have a ``description`` (``json_schema_extra={"flag": ...}`` renames one; ``{"cli": False}``
    hides it)."""
    specs: list[OptionSpec] = []
    if dataclasses.is_dataclass(cls):
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            meta = f.metadata.get(_CLI)
            if meta is None:
                continue
            default = f.default if f.default is not MISSING else (
                f.default_factory() if f.default_factory is not MISSING else MISSING)  # type: ignore[misc]
            specs.append(_spec(f.name, hints[f.name], default, meta))
        return specs
    fields = getattr(cls, "model_fields", None)
    if fields is None:
        raise TypeError(f"{cls!r} is neither a dataclass nor a pydantic model")
    for name, info in fields.items():
        extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        if not info.description or extra.get("cli") is False:
            continue
        default = MISSING if info.is_required() else info.get_default(call_default_factory=True)
        specs.append(_spec(name, info.annotation, default, {"help": info.description, "flag": extra.get("flag")}))
    return specs


def add_options(parser: argparse.ArgumentParser, cls: type) -> None:
    """Add ``cls``'s options (see :func:`option_specs`) to ``parser``."""
    for spec in option_specs(cls):
        kwargs: dict[str, Any] = {"help": spec.help}
        if spec.choices:
            kwargs["choices"] = spec.choices
        if spec.positional:
            parser.add_argument(spec.name, type=spec.type, **kwargs)
            continue
        flag = spec.flag or "--" + spec.name.replace("_", "-")
        if spec.is_bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif spec.repeatable:
            kwargs["action"] = "append"
            kwargs["type"] = spec.type
        elif spec.type is not None:
            kwargs["type"] = spec.type
        if spec.default is MISSING:
            kwargs["required"] = True
        else:
            kwargs["default"] = spec.default
        parser.add_argument(flag, dest=spec.dest, **kwargs)


def config_from_args(cls: type, args: argparse.Namespace, **extra: Any) -> Any:
    """``cls(**options)`` from parsed arguments (only the options ``cls`` declares that ``args`` holds), plus
    ``extra`` keyword arguments."""
    values = {s.name: getattr(args, s.dest) for s in option_specs(cls) if hasattr(args, s.dest)}
    values.update(extra)
    return cls(**values)


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """``--help`` with each option's default appended, except where there is none (None, False flags stay
    readable: ``--masks, --no-masks ... (default: False)``)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        help_text = action.help or ""
        if action.default is None or action.default is argparse.SUPPRESS or action.required:
            return help_text
        return super()._get_help_string(action) or help_text
