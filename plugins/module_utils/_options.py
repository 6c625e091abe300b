# -*- coding: utf-8 -*-
# Copyright (c) pyzfsautosnap contributors
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later

"""One options schema per entry point, and what is derived from it.

An entry point (``autosnap``, ``replicate``) declares its options once as a
:class:`Schema`. From it come the Ansible ``argument_spec`` (plain data: the
engine imports nothing from Ansible), the argparse options of the command line,
the argument list the roles store for systemd units, and :func:`validate`, which
turns whatever a module, the command line or a role was given into the values
the engine runs with, or raises :class:`ValidationError` naming the option.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import re
import typing as t

from ._types import ValidationError

OptionType = t.Literal['str', 'bool', 'int', 'float', 'list', 'dict', 'path']
# (value after type conversion, option name) -> normalised value; raises ValidationError
Validator = t.Callable[[t.Any, str], t.Any]
# whole mapping after every option was checked -> normalised mapping; cross-option rules
Check = t.Callable[[t.Dict[str, t.Any]], t.Dict[str, t.Any]]

_BOOL_WORDS = {'true': True, 'yes': True, 'on': True, '1': True, 'false': False, 'no': False, 'off': False, '0': False}
_INT_RE = re.compile(r'[+-]?\d+')
_FLOAT_RE = re.compile(r'[+-]?(\d+(\.\d*)?|\.\d+)')


@dataclasses.dataclass(frozen=True)
class Option:
    """One option of an entry point, as every front end sees it."""

    name: str
    type: OptionType = 'str'
    elements: OptionType | None = None
    default: t.Any = None
    choices: tuple[str, ...] | None = None
    required: bool = False
    no_log: bool = False
    help: str = ''
    validator: Validator | None = None
    # set: an empty list or mapping is refused with this explanation, because empty must never mean "all"
    empty: str | None = None
    # command line: flags (default --name-with-dashes, or --no-name for a bool that defaults to true)
    flags: tuple[str, ...] = ()
    positional: bool = False
    metavar: str | None = None

    def cli_flags(self) -> tuple[str, ...]:
        if self.flags:
            return self.flags
        dashed = self.name.replace('_', '-')
        return (f'--no-{dashed}',) if self.type == 'bool' and self.default is True else (f'--{dashed}',)


@dataclasses.dataclass(frozen=True)
class Schema:
    """The options of one entry point and the rules that join them."""

    name: str
    options: tuple[Option, ...]
    checks: tuple[Check, ...] = ()
    help: str = ''
    # option groups given to AnsibleModule as well, so a module fails as Ansible users expect
    mutually_exclusive: tuple[tuple[str, ...], ...] = ()
    required_together: tuple[tuple[str, ...], ...] = ()

    def __getitem__(self, name: str) -> Option:
        for option in self.options:
            if option.name == name:
                return option
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [option.name for option in self.options]


# ------------------------------------------------------------------ Ansible
def module_kwargs(schema: Schema) -> dict[str, t.Any]:
    """The keyword arguments of ``AnsibleModule`` that *schema* defines."""
    return {'argument_spec': argument_spec(schema),
            'mutually_exclusive': [list(group) for group in schema.mutually_exclusive],
            'required_together': [list(group) for group in schema.required_together]}


def argument_spec(schema: Schema) -> dict[str, dict[str, t.Any]]:
    """The module's ``argument_spec``; the engine still validates what Ansible let through."""
    spec: dict[str, dict[str, t.Any]] = {}
    for option in schema.options:
        entry: dict[str, t.Any] = {'type': option.type}
        if option.elements:
            entry['elements'] = option.elements
        if option.default is not None:
            entry['default'] = copy.deepcopy(option.default)
        if option.choices:
            entry['choices'] = list(option.choices)
        if option.required:
            entry['required'] = True
        if option.no_log:
            entry['no_log'] = True
        spec[option.name] = entry
    return spec


# ------------------------------------------------------------------ command line
class ArgumentError(ValidationError):
    """The command line did not parse (raised instead of exiting, for callers that are not the CLI)."""


class RaisingParser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of printing usage and exiting."""

    def error(self, message: str) -> t.NoReturn:
        raise ArgumentError(message)


def key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition('=')
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f'expected KEY=VALUE, got {text!r}')
    return key.strip(), value.strip()


def _cli_help(option: Option) -> str:
    text = option.help
    if option.choices:
        text += f' (one of: {", ".join(option.choices)})'
    if option.type in ('list', 'dict') and not option.positional:
        text += ' (repeatable)'
    if option.default not in (None, [], {}) and option.type != 'bool':
        text += f' (default: {option.default})'
    return text.strip().replace('%', '%%')


def add_arguments(parser: argparse.ArgumentParser, schema: Schema) -> None:
    """Add every option of *schema*; absent options stay absent so :func:`validate` applies the one default."""
    for option in schema.options:
        kwargs: dict[str, t.Any] = {'help': _cli_help(option)}
        if option.positional:
            parser.add_argument(option.name, nargs='+', metavar=option.metavar or option.name.upper(), **kwargs)
            continue
        kwargs.update(dest=option.name, default=argparse.SUPPRESS)
        if option.type == 'bool':
            kwargs['action'] = 'store_false' if option.default is True else 'store_true'
        elif option.type == 'list':
            kwargs.update(action='append', metavar=option.metavar or (option.elements or 'str').upper())
        elif option.type == 'dict':
            kwargs.update(action='append', type=key_value, metavar=option.metavar or 'KEY=VALUE')
        else:
            kwargs['metavar'] = option.metavar or option.type.upper()
        parser.add_argument(*option.cli_flags(), **kwargs)


def from_namespace(schema: Schema, namespace: argparse.Namespace) -> dict[str, t.Any]:
    """The raw mapping a parsed command line stands for (pairs of dict options made mappings)."""
    given = vars(namespace)
    raw: dict[str, t.Any] = {}
    for option in schema.options:
        if option.name in given:
            value = given[option.name]
            raw[option.name] = dict(value) if option.type == 'dict' else value
    return raw


def _cli_value(value: t.Any) -> str:
    if isinstance(value, bool):
        return 'true' if value else 'false'
    return str(value)


def to_argv(schema: Schema, values: t.Mapping[str, t.Any]) -> list[str]:
    """Command line arguments for *values* (normalised ones), which the command line parses back to them.

    Options take their values as ``--option=value`` so that a value can never pass
    for an option; positionals come first, so options appended later still parse.
    """
    head: list[str] = []
    tail: list[str] = []
    for option in schema.options:
        value = values.get(option.name)
        if value is None or value == option.default:
            continue
        flag = option.cli_flags()[0]
        if option.positional:
            head.extend(_cli_value(v) for v in value)
        elif option.type == 'bool':
            tail.append(flag)
        elif option.type == 'list':
            tail.extend(f'{flag}={_cli_value(v)}' for v in value)
        elif option.type == 'dict':
            tail.extend(f'{flag}={k}={_cli_value(v)}' for k, v in value.items())
        else:
            tail.append(f'{flag}={_cli_value(value)}')
    return head + tail


# ------------------------------------------------------------------ validation
def _convert(kind: OptionType, value: t.Any, what: str) -> t.Any:
    if kind in ('str', 'path'):
        if isinstance(value, str):
            return value
        if isinstance(value, int) and not isinstance(value, bool):
            return str(value)
        raise ValidationError(f'{what} must be a string, got {value!r}')
    if kind == 'bool':
        if isinstance(value, bool):
            return value
        # what Ansible's own boolean options take, since role variables arrive untyped
        if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS:
            return _BOOL_WORDS[value.strip().lower()]
        raise ValidationError(f'{what} must be true or false, got {value!r}')
    if kind == 'int':
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and _INT_RE.fullmatch(value.strip()):
            return int(value)
        raise ValidationError(f'{what} must be an integer, got {value!r}')
    if kind == 'float':
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str) and _FLOAT_RE.fullmatch(value.strip()):
            return float(value)
        raise ValidationError(f'{what} must be a number, got {value!r}')
    if kind == 'list':
        if isinstance(value, str):
            return [value]
        if isinstance(value, (list, tuple)):
            return list(value)
        raise ValidationError(f'{what} must be a list, got {value!r}')
    if kind == 'dict':
        if isinstance(value, t.Mapping) and all(isinstance(k, str) for k in value):
            return dict(value)
        raise ValidationError(f'{what} must be a mapping with string keys, got {value!r}')
    raise AssertionError(f'unknown option type {kind}')  # pragma: no cover


def _check_choice(option: Option, value: t.Any, what: str) -> None:
    if option.choices is not None and value not in option.choices:
        raise ValidationError(f'{what} must be one of {", ".join(option.choices)}, got {value!r}')


def validate_option(option: Option, value: t.Any) -> t.Any:
    """One option's value, converted and checked; None (not given) becomes the default."""
    if value is None:
        if option.required:
            raise ValidationError(f'{option.name} is required')
        return copy.deepcopy(option.default)
    value = _convert(option.type, value, option.name)
    if option.type == 'list':
        value = [_convert(option.elements or 'str', item, f'{option.name} item') for item in value]
        for item in value:
            _check_choice(option, item, f'{option.name} item')
    elif option.type != 'dict':
        _check_choice(option, value, option.name)
    if option.empty is not None and option.type in ('list', 'dict') and not value:
        what = 'is required and ' if option.required else ''
        raise ValidationError(f'{option.name} {what}must not be empty: {option.empty}')
    if option.validator is not None:
        value = option.validator(value, option.name)
    return value


def validate(schema: Schema, raw: t.Mapping[str, t.Any]) -> dict[str, t.Any]:
    """Every option of *schema* from *raw*: defaults applied, types converted, the engine's rules checked."""
    unknown = sorted(set(raw) - set(schema.names))
    if unknown:
        raise ValidationError(f'unknown {schema.name} option(s): {", ".join(unknown)}; known: {", ".join(schema.names)}')
    for group in schema.mutually_exclusive:
        given = [name for name in group if raw.get(name) is not None]
        if len(given) > 1:
            raise ValidationError(f'{" and ".join(given)} are mutually exclusive: give one, not both')
    for group in schema.required_together:
        given = [name for name in group if raw.get(name) is not None]
        if given and len(given) < len(group):
            raise ValidationError(f'{" and ".join(group)} must be given together')
    values = {option.name: validate_option(option, raw.get(option.name)) for option in schema.options}
    for check in schema.checks:
        values = check(values)
    return values


def parse_argv(schema: Schema, argv: t.Sequence[str], prog: str | None = None) -> dict[str, t.Any]:
    """Validate a command line of *schema* (as :func:`to_argv` writes it) without running anything."""
    parser = RaisingParser(prog=prog or schema.name, add_help=False)
    add_arguments(parser, schema)
    return validate(schema, from_namespace(schema, parser.parse_args(list(argv))))
