"""The prompt registry: versioned chat templates with declared variables, aliases and a
linked evaluation set.

A prompt is a list of chat messages (``{"role": "system" | "user" | "assistant",
"content": ...}``) whose contents hold ``{variable}`` fields, parsed the way Python's
:class:`string.Formatter` parses them (``{{`` and ``}}`` are literal braces). Fields are
plain names: no positional ``{}``, no ``{a.b}`` or ``{a[0]}``, no ``!r`` conversion or
``:spec`` format (a value is inserted as its ``str``, never formatted or re-parsed).

Every field must be declared, and every declared variable used::

    {"review": {"type": "string", "required": True, "description": "the review text"}}

Types are ``string``, ``number`` (int or float), ``integer`` and ``boolean``; ``required``
defaults to true (an optional variable left out renders as the empty string); a bare type
name (``{"review": "string"}``) is short for the full form. ``variables=None`` declares each
field of the template as a required string.

Versions are 1, 2, 3 ... per name. Creating a prompt whose canonical template (messages and
variable declarations, SHA-256 of their sorted-key JSON) and evaluation set are identical to
an existing version returns that version (``created=False``) instead of a new one. Aliases
(``production``, ``candidate`` ...) point at versions; ``latest`` is the highest. Creating a
version and moving an alias are recorded in the audit trail (kind ``prompt``, actions
``prompt.create`` and ``prompt.alias``) in the same transaction as the change.

Example::

    v = create_prompt(ws, "sentiment", [
        {"role": "system", "content": "Answer positive or negative."},
        {"role": "user", "content": "Review: {review}"},
    ], variables={"review": "string"}, eval_set="sentiment-eval")
    set_prompt_alias(ws, "sentiment", "production", v.version, reason="first version")
    get_prompt(ws, "sentiment", "production").render({"review": "A delight."})
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from shipyard.errors import ModelNotFoundError, ParameterError, invalid_parameter

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

    from shipyard.workspace import Workspace

ROLES = ("system", "user", "assistant")
VARIABLE_TYPES = ("string", "number", "integer", "boolean")
LATEST = "latest"
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.\-]{0,199}")
_ALIAS = re.compile(r"[A-Za-z][A-Za-z0-9_\-]{0,99}")
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SPEC_KEYS = frozenset({"type", "required", "description"})


class PromptNotFoundError(ModelNotFoundError):
    """No prompt of that name, or no such version or alias of it (the server answers 404)."""


@dataclass(frozen=True)
class PromptVersion:
    """One stored version of a prompt: its messages, declared variables and evaluation set."""

    name: str
    version: int
    messages: tuple[dict[str, str], ...]
    variables: dict[str, dict[str, Any]]
    """``{name: {"type", "required", "description"}}``, every key filled in."""
    eval_set: str | None
    description: str
    sha256: str
    actor: str
    created_at: datetime
    aliases: tuple[str, ...] = ()
    created: bool = True
    """False when :func:`create_prompt` found an identical version and returned it."""

    @property
    def ref(self) -> str:
        """``name@version``, as the CLI and requests name it."""
        return f"{self.name}@{self.version}"

    def render(self, variables: Mapping[str, Any]) -> list[dict[str, str]]:
        """The chat messages with ``variables`` filled in; a missing required, unknown or
        mistyped variable raises ParameterError naming it."""
        values = check_values(self, variables)
        return [
            {"role": m["role"], "content": _substitute(m["content"], values)} for m in self.messages
        ]

    def to_dict(self) -> dict[str, Any]:
        """The version as JSON-ready data (what ``shipyard llm prompts show --json`` prints)."""
        return {
            "name": self.name,
            "version": self.version,
            "messages": [dict(m) for m in self.messages],
            "variables": self.variables,
            "eval_set": self.eval_set,
            "description": self.description,
            "sha256": self.sha256,
            "actor": self.actor,
            "created_at": self.created_at.isoformat(),
            "aliases": list(self.aliases),
        }


# ------------------------------------------------------------------------- validation


def template_fields(content: str, where: str = "content") -> list[str]:
    """The ``{variable}`` names of one message's content, in order of first use; a malformed
    brace or a field that is not a plain name raises ParameterError naming ``where``."""
    try:
        parts = list(string.Formatter().parse(content))
    except ValueError as exc:
        raise ParameterError(
            f"{where} is not a valid template ({exc}); write a literal brace as '{{{{' or '}}}}'"
        ) from exc
    names: list[str] = []
    for _literal, name, spec, conversion in parts:
        if name is None:
            continue
        if not _FIELD.fullmatch(name):
            raise ParameterError(
                f"{where} has the field {{{name}}}; fields must be plain variable names such "
                "as {review} (no positional {}, attribute, index or number fields)"
            )
        if spec or conversion:
            raise ParameterError(
                f"{where} has the field {{{name}{'!' + conversion if conversion else ''}"
                f"{':' + spec if spec else ''}}}; fields take no conversion or format spec: "
                f"write {{{name}}}"
            )
        if name not in names:
            names.append(name)
    return names


def check_messages(messages: object, owner: str = "create_prompt") -> tuple[dict[str, str], ...]:
    """The messages as a tuple of ``{role, content}`` dicts, or ParameterError naming the
    first bad one (empty list, not a mapping, unknown role, content not a string)."""
    if isinstance(messages, str | bytes) or not isinstance(messages, Sequence) or not messages:
        raise invalid_parameter(
            "messages", owner, "a non-empty list of {role, content} messages", messages
        )
    out = []
    for i, message in enumerate(messages):
        if not isinstance(message, Mapping):
            raise invalid_parameter(f"messages[{i}]", owner, "a {role, content} mapping", message)
        extra = sorted(set(message) - {"role", "content"})
        if extra:
            raise ParameterError(
                f"messages[{i}] has unknown key(s) {extra}; a message has 'role' and 'content'"
            )
        role, content = message.get("role"), message.get("content")
        if role not in ROLES:
            raise invalid_parameter(f"messages[{i}].role", owner, f"one of {list(ROLES)}", role)
        if not isinstance(content, str):
            raise invalid_parameter(f"messages[{i}].content", owner, "a string", content)
        out.append({"role": str(role), "content": content})
    return tuple(out)


def check_variables(
    declared: Mapping[str, Any] | None, used: Sequence[str], owner: str = "create_prompt"
) -> dict[str, dict[str, Any]]:
    """The declarations in full form (type, required, description), checked against the
    fields the template ``used``: an undeclared field or an unused declaration raises."""
    if declared is None:
        return {name: _spec("string", True, "") for name in used}
    if not isinstance(declared, Mapping):
        raise invalid_parameter(
            "variables", owner, "a mapping {name: {type, required, description}}", declared
        )
    specs = {}
    for name, spec in declared.items():
        if not isinstance(name, str) or not _FIELD.fullmatch(name):
            raise invalid_parameter("variables", owner, "plain variable names as keys", name)
        specs[name] = _one_spec(name, spec, owner)
    undeclared = [n for n in used if n not in specs]
    if undeclared:
        raise ParameterError(
            f"the template uses undeclared variable(s) {undeclared}; declare them in "
            f"'variables' (declared: {sorted(specs) or 'none'})"
        )
    unused = sorted(set(specs) - set(used))
    if unused:
        raise ParameterError(
            f"variable(s) {unused} are declared but no message uses them; "
            f"the template's fields are {list(used) or 'none'}"
        )
    return {n: specs[n] for n in sorted(specs)}


def _one_spec(name: str, spec: object, owner: str) -> dict[str, Any]:
    if isinstance(spec, str):
        spec = {"type": spec}
    if not isinstance(spec, Mapping):
        raise invalid_parameter(
            f"variables[{name!r}]", owner, "a type name or {type, required, description}", spec
        )
    extra = sorted(set(spec) - _SPEC_KEYS)
    if extra:
        raise ParameterError(
            f"variables[{name!r}] has unknown key(s) {extra}; allowed: {sorted(_SPEC_KEYS)}"
        )
    kind, required = spec.get("type", "string"), spec.get("required", True)
    description = spec.get("description", "")
    if kind not in VARIABLE_TYPES:
        raise invalid_parameter(
            f"variables[{name!r}].type", owner, f"one of {list(VARIABLE_TYPES)}", kind
        )
    if not isinstance(required, bool):
        raise invalid_parameter(f"variables[{name!r}].required", owner, "true or false", required)
    if not isinstance(description, str):
        raise invalid_parameter(f"variables[{name!r}].description", owner, "a string", description)
    return _spec(str(kind), required, description)


def _spec(kind: str, required: bool, description: str) -> dict[str, Any]:
    return {"type": kind, "required": required, "description": description}


def check_values(prompt: PromptVersion, variables: Mapping[str, Any]) -> dict[str, str]:
    """Each variable's text, after checking ``variables`` against the prompt's declarations
    (unknown, missing required and mistyped values raise ParameterError naming them)."""
    where = f"prompt {prompt.ref}"
    if not isinstance(variables, Mapping):
        raise ParameterError(
            f"{where} takes its variables as a mapping {{name: value}}; "
            f"got {type(variables).__name__}"
        )
    unknown = sorted(str(k) for k in variables if k not in prompt.variables)
    if unknown:
        raise ParameterError(
            f"{where} has no variable(s) {unknown}; its variables are {sorted(prompt.variables)}"
        )
    values = {}
    for name, spec in prompt.variables.items():
        if name not in variables or variables[name] is None:
            if spec["required"]:
                raise ParameterError(
                    f"{where} needs variable {name!r} ({spec['type']}); it was not given"
                )
            values[name] = ""
            continue
        value = variables[name]
        if not _is_type(value, spec["type"]):
            raise ParameterError(
                f"{where}: variable {name!r} must be {_TYPE_WORDS[spec['type']]}; "
                f"got {value!r} ({type(value).__name__})"
            )
        values[name] = str(value)
    return values


_TYPE_WORDS = {
    "string": "a string",
    "number": "a finite number",
    "integer": "an integer",
    "boolean": "true or false",
}


def _is_type(value: object, kind: str) -> bool:
    if kind == "string":
        return isinstance(value, str)
    if kind == "boolean":
        return isinstance(value, bool)
    if isinstance(value, bool):
        return False
    if kind == "integer":
        return isinstance(value, int)
    return isinstance(value, int) or (isinstance(value, float) and math.isfinite(value))


def _substitute(content: str, values: Mapping[str, str]) -> str:
    """The content with each field replaced by its value's text (never re-parsed)."""
    return "".join(
        literal + ("" if name is None else values[name])
        for literal, name, _spec, _conversion in string.Formatter().parse(content)
    )


def template_sha256(messages: Sequence[Mapping[str, str]], variables: Mapping[str, Any]) -> str:
    """SHA-256 of the canonical template: the messages and variable declarations as JSON
    with sorted keys and no spaces."""
    canonical = json.dumps(
        {"messages": [dict(m) for m in messages], "variables": variables},
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _check_name(name: object, what: str = "name", pattern: re.Pattern[str] = _NAME) -> str:
    if not isinstance(name, str) or not pattern.fullmatch(name):
        raise ParameterError(
            f"A prompt {what} must start with a letter and hold only letters, digits, '_', "
            f"'-'{' and .' if pattern is _NAME else ''} (at most "
            f"{200 if pattern is _NAME else 100} characters). Got {name!r} instead."
        )
    return name


# ------------------------------------------------------------------------------ create


def check_template(
    messages: object, variables: Mapping[str, Any] | None, owner: str = "create_prompt"
) -> tuple[tuple[dict[str, str], ...], dict[str, dict[str, Any]]]:
    """The checked messages and full variable declarations of a template, or ParameterError
    naming what is wrong (what :func:`create_prompt` stores; useful to lint a file)."""
    checked = check_messages(messages, owner)
    used: list[str] = []
    for i, message in enumerate(checked):
        used += template_fields(message["content"], f"messages[{i}].content")
    return checked, check_variables(variables, list(dict.fromkeys(used)), owner)


def create_prompt(
    workspace: Workspace,
    name: str,
    messages: Sequence[Mapping[str, str]],
    *,
    variables: Mapping[str, Any] | None = None,
    eval_set: str | None = None,
    description: str = "",
    actor: str | None = None,
) -> PromptVersion:
    """Store a new version of prompt ``name`` (or return the identical existing one);
    ``eval_set`` must be a data set of the workspace's catalog.

    Example: ``create_prompt(ws, "sentiment", [{"role": "user", "content": "Review:
    {review}"}], variables={"review": "string"}, eval_set="sentiment-eval")``.
    """
    from sqlalchemy import func, insert, select

    from shipyard.governance.audit import append, transaction
    from shipyard.registry.models import current_user
    from shipyard.tables import llm_prompts as table

    _check_name(name)
    checked, specs = check_template(messages, variables)
    if eval_set is not None:
        if not isinstance(eval_set, str) or not eval_set.strip():
            raise invalid_parameter(
                "eval_set", "create_prompt", "a data set name or None", eval_set
            )
        from shipyard.data.catalog import get_dataset

        get_dataset(workspace, eval_set)  # DatasetNotFoundError names the registered ones
    if not isinstance(description, str):
        raise invalid_parameter("description", "create_prompt", "a string", description)
    digest = template_sha256(checked, specs)
    who = actor or current_user()
    with transaction(workspace) as conn:  # BEGIN IMMEDIATE: version numbers never collide
        same = conn.execute(
            select(table)
            .where((table.c.name == name) & (table.c.sha256 == digest))
            .order_by(table.c.version)
        ).mappings()
        for existing in same:
            if existing["eval_set"] == eval_set:
                return replace(_from_row(dict(existing), _alias_map(conn, name)), created=False)
        top = conn.execute(select(func.max(table.c.version)).where(table.c.name == name)).scalar()
        row: dict[str, Any] = {
            "name": name,
            "version": int(top or 0) + 1,
            "messages": [dict(m) for m in checked],
            "variables": specs,
            "eval_set": eval_set,
            "description": description,
            "sha256": digest,
            "actor": who,
            "created_at": _now(),
        }
        conn.execute(insert(table).values(**row))
        append(
            workspace,
            kind="prompt",
            name=name,
            version=row["version"],
            action="prompt.create",
            reason=description or f"prompt {name} v{row['version']}",
            actor=who,
            after={k: row[k] for k in ("messages", "variables", "eval_set", "sha256")},
            connection=conn,
        )
        return _from_row(row, _alias_map(conn, name))


# ------------------------------------------------------------------------- read, alias


def get_prompt(workspace: Workspace, name: str, ref: int | str = LATEST) -> PromptVersion:
    """A version of prompt ``name`` by number (2, "2"), alias ("production", "@production")
    or ``"latest"``; PromptNotFoundError says what exists."""
    from sqlalchemy import select

    from shipyard.tables import llm_prompts as table

    with workspace.engine.connect() as conn:
        version = _resolve(conn, name, ref)
        row = (
            conn.execute(select(table).where((table.c.name == name) & (table.c.version == version)))
            .mappings()
            .first()
        )
        if row is None:
            known = _versions(conn, name)
            raise PromptNotFoundError(
                f"Prompt {name!r} has no version {version}; versions: {known}."
            )
        return _from_row(dict(row), _alias_map(conn, name))


def parse_ref(text: str) -> tuple[str, int | str]:
    """``"sentiment@2"`` -> ``("sentiment", 2)``, ``"sentiment@production"`` -> ``(...,
    "production")``, ``"sentiment"`` -> ``("sentiment", "latest")``."""
    if not isinstance(text, str) or not text.strip():
        raise invalid_parameter("prompt", "parse_ref", "NAME or NAME@VERSION or NAME@ALIAS", text)
    name, _, ref = text.partition("@")
    if not ref:
        return name, LATEST
    return name, int(ref) if ref.isdigit() else ref


def set_prompt_alias(
    workspace: Workspace,
    name: str,
    alias: str,
    version: int,
    *,
    reason: str,
    actor: str | None = None,
) -> PromptVersion:
    """Point ``alias`` of prompt ``name`` at ``version`` (audited with ``reason``); returns
    that version with its aliases."""
    from sqlalchemy import delete, insert, select

    from shipyard.governance.audit import append, transaction
    from shipyard.registry.models import current_user
    from shipyard.tables import llm_prompt_aliases as aliases

    _check_name(alias, "alias", _ALIAS)
    if alias == LATEST:
        raise ParameterError("'latest' always means the highest version; choose another alias")
    if not isinstance(reason, str) or not reason.strip():
        raise invalid_parameter("reason", "set_prompt_alias", "why the alias moves", reason)
    if isinstance(version, bool) or not isinstance(version, int):
        raise invalid_parameter("version", "set_prompt_alias", "a version number", version)
    who = actor or current_user()
    with transaction(workspace) as conn:
        _resolve(conn, name, LATEST)  # PromptNotFoundError when there is no such prompt
        if version not in _versions(conn, name):
            raise PromptNotFoundError(
                f"Prompt {name!r} has no version {version}; versions: {_versions(conn, name)}."
            )
        where = (aliases.c.name == name) & (aliases.c.alias == alias)
        before = conn.execute(select(aliases.c.version).where(where)).scalar()
        conn.execute(delete(aliases).where(where))
        conn.execute(
            insert(aliases).values(
                name=name, alias=alias, version=version, actor=who, updated_at=_now()
            )
        )
        append(
            workspace,
            kind="prompt",
            name=name,
            version=version,
            action="prompt.alias",
            alias=alias,
            previous_version=before,
            reason=reason,
            actor=who,
            before=before,
            after=version,
            connection=conn,
        )
    return get_prompt(workspace, name, version)


def list_prompts(workspace: Workspace, name: str | None = None) -> list[PromptVersion]:
    """Every stored prompt version (of ``name``), by name then version."""
    from sqlalchemy import select

    from shipyard.tables import llm_prompts as table

    query = select(table).order_by(table.c.name, table.c.version)
    if name is not None:
        query = query.where(table.c.name == name)
    with workspace.engine.connect() as conn:
        rows = [dict(r) for r in conn.execute(query).mappings()]
        held = {n: _alias_map(conn, n) for n in {r["name"] for r in rows}}
    return [_from_row(r, held[r["name"]]) for r in rows]


def _resolve(conn: Connection, name: str, ref: int | str) -> int:
    """The version number ``ref`` names (PromptNotFoundError when there is none)."""
    versions = _versions(conn, name)
    if not versions:
        from sqlalchemy import select

        from shipyard.tables import llm_prompts as table

        known = sorted(set(conn.execute(select(table.c.name)).scalars()))
        raise PromptNotFoundError(f"No prompt named {name!r}; prompts: {known or 'none'}.")
    if isinstance(ref, bool) or not isinstance(ref, int | str):
        raise invalid_parameter("ref", "get_prompt", "a version, an alias or 'latest'", ref)
    text = ref if isinstance(ref, int) else ref.lstrip("@")
    if isinstance(text, int) or text.isdigit():
        return int(text)
    if text == LATEST:
        return versions[-1]
    held = {a: v for v, names in _alias_map(conn, name).items() for a in names}
    if text not in held:
        shown = ", ".join(f"{a} -> v{v}" for a, v in sorted(held.items())) or "none"
        raise PromptNotFoundError(f"Prompt {name!r} has no alias {text!r} (aliases: {shown}).")
    return held[text]


def _versions(conn: Connection, name: str) -> list[int]:
    from sqlalchemy import select

    from shipyard.tables import llm_prompts as table

    query = select(table.c.version).where(table.c.name == name).order_by(table.c.version)
    return [int(v) for v in conn.execute(query).scalars()]


def _alias_map(conn: Connection, name: str) -> dict[int, tuple[str, ...]]:
    from sqlalchemy import select

    from shipyard.tables import llm_prompt_aliases as aliases

    query = select(aliases.c.alias, aliases.c.version).where(aliases.c.name == name)
    out: dict[int, list[str]] = {}
    for alias, version in conn.execute(query.order_by(aliases.c.alias)):
        out.setdefault(int(version), []).append(str(alias))
    return {v: tuple(a) for v, a in out.items()}


def _from_row(row: Mapping[str, Any], held: Mapping[int, tuple[str, ...]]) -> PromptVersion:
    created = row["created_at"]
    return PromptVersion(
        name=row["name"],
        version=int(row["version"]),
        messages=tuple(dict(m) for m in row["messages"]),
        variables=dict(row["variables"]),
        eval_set=row["eval_set"],
        description=row["description"],
        sha256=row["sha256"],
        actor=row["actor"],
        created_at=created.replace(tzinfo=UTC) if created.tzinfo is None else created,
        aliases=held.get(int(row["version"]), ()),
    )


def _now() -> datetime:
    """UTC now without tzinfo (SQLite stores naive datetimes; read back as UTC)."""
    return datetime.now(UTC).replace(tzinfo=None)


__all__ = [
    "LATEST",
    "ROLES",
    "VARIABLE_TYPES",
    "PromptNotFoundError",
    "PromptVersion",
    "create_prompt",
    "get_prompt",
    "list_prompts",
    "parse_ref",
    "set_prompt_alias",
    "template_fields",
]
