"""The recurring-runs file the chart's publish Job passes to ``riskloop cluster publish --schedules``.

A YAML list, one entry per KFP recurring run::

    - name: riskloop-monitoring-daily      # the recurring run's name in KFP (unique)
      pipeline: monitoring                 # a compiled pipeline: file stem (or riskloop-<stem>)
      cron: "0 30 2 * * *"                 # KFP's 6 fields: sec min hour day-of-month month day-of-week
      parameters: {pushgateway_url: "http://..."}   # pipeline parameters; omitted ones keep their defaults
      enabled: true                        # false: no recurring run exists for it

Parsing is pure: :func:`load_schedules` reads and validates, :func:`check_against_pipelines`
checks names and parameters against the compiled pipelines. Errors say which entry,
which field, and how to fix it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, RootModel, ValidationError, field_validator, model_validator

from riskloop.errors import ConfigError

CRON_HELP = (
    "KFP cron has 6 fields: second minute hour day-of-month month day-of-week, e.g. '0 30 2 * * *' for 02:30 every day"
)
# (name, low, high, names allowed) of the 6 fields, as robfig/cron (KFP's scheduler) reads them
_CRON_FIELDS = (
    ("second", 0, 59),
    ("minute", 0, 59),
    ("hour", 0, 23),
    ("day-of-month", 1, 31),
    ("month", 1, 12),
    ("day-of-week", 0, 6),
)
_CRON_NAMES = {
    4: {"jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"},
    5: {"sun", "mon", "tue", "wed", "thu", "fri", "sat"},
}
_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")


def check_cron(expr: str) -> str:
    """Return ``expr`` if it is a valid 6-field KFP cron expression, else raise ValueError saying why."""
    fields = expr.split()
    if len(fields) == 5:
        raise ValueError(f"{expr!r} has 5 fields (Unix cron); {CRON_HELP}: prepend the seconds, '0 {expr}'")
    if len(fields) != 6:
        raise ValueError(f"{expr!r} has {len(fields)} fields; {CRON_HELP}")
    for i, (field, (what, low, high)) in enumerate(zip(fields, _CRON_FIELDS, strict=True)):
        for part in field.split(","):
            base, _, step = part.partition("/")
            if step and not (step.isdigit() and int(step) > 0):
                raise ValueError(f"{what} field {field!r}: step {step!r} is not a positive number")
            if base in ("*", "?"):
                continue
            for bound in base.split("-", 1):
                if bound.lower() in _CRON_NAMES.get(i, set()):
                    continue
                if not bound.isdigit() or not low <= int(bound) <= high:
                    raise ValueError(f"{what} field {field!r}: {bound!r} is not in {low}-{high}; {CRON_HELP}")
    return expr


class Schedule(BaseModel):
    """One recurring run of a compiled pipeline."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(description="Recurring run name in KFP: lowercase letters, digits, '-'; unique in the file.")
    pipeline: str = Field(min_length=1, description="Compiled pipeline: file stem (monitoring) or riskloop-<stem>.")
    cron: str = Field(description=CRON_HELP)
    parameters: dict[str, Any] = Field(default_factory=dict, description="Pipeline parameters by name.")
    enabled: bool = True

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not _NAME.match(v):
            raise ValueError(
                f"{v!r} must be 1-63 lowercase letters, digits or '-', starting and ending "
                "with a letter or digit, e.g. 'riskloop-monitoring-daily'"
            )
        return v

    @field_validator("cron")
    @classmethod
    def _cron(cls, v: str) -> str:
        return check_cron(v)

    @property
    def pipeline_stem(self) -> str:
        return self.pipeline.removeprefix("riskloop-")


class ScheduleFile(RootModel[list[Schedule]]):
    @model_validator(mode="after")
    def _unique(self) -> ScheduleFile:
        seen: set[str] = set()
        for s in self.root:
            if s.name in seen:
                raise ValueError(f"schedule name {s.name!r} appears twice: each name is one recurring run in KFP")
            seen.add(s.name)
        return self


def parse_schedules(text: str, *, source: str = "<schedules>") -> list[Schedule]:
    """Validate the YAML text of a schedules file; ConfigError names the entry, the field and the fix."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(
            f"schedules file is not valid YAML: {exc}",
            where=source,
            fix="check indentation and quoting (quote cron expressions)",
        ) from exc
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise ConfigError(
            f"schedules file must be a YAML list of schedules, got a {type(raw).__name__}",
            where=source,
            fix="write `- {name: ..., pipeline: ..., cron: ..., parameters: {}, "
            "enabled: true}` entries at the top level",
        )
    try:
        return ScheduleFile.model_validate(raw).root
    except ValidationError as exc:
        raise ConfigError(_describe(exc, raw), where=source, fix=_fix_for(exc)) from None


def load_schedules(path: Path) -> list[Schedule]:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(
            f"cannot read the schedules file: {exc.strerror}",
            where=str(path),
            fix="pass the path of an existing YAML file to --schedules",
        ) from exc
    return parse_schedules(text, source=str(path))


def _describe(exc: ValidationError, raw: list[Any]) -> str:
    lines = []
    for err in exc.errors():
        loc = list(err["loc"])
        first = loc[0] if loc else None
        if isinstance(first, int):
            i = first
            loc.pop(0)
            entry = raw[i] if i < len(raw) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            who = f"entry {i + 1}" + (f" ({name!r})" if name else "")
        else:
            who = "file"
        field = ".".join(str(p) for p in loc) or "(entry)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field"
        lines.append(f"{who}, field {field}: {msg}")
    return "invalid schedules:\n    " + "\n    ".join(lines)


def _fix_for(exc: ValidationError) -> str:
    types = {e["type"] for e in exc.errors()}
    if "extra_forbidden" in types:
        return "the fields are name, pipeline, cron, parameters, enabled; pipeline parameters go under `parameters`"
    if "missing" in types:
        return "every entry needs name, pipeline and cron"
    return "correct the fields named above"


def check_against_pipelines(schedules: list[Schedule], parameters: dict[str, dict[str, str]]) -> None:
    """Every schedule names a compiled pipeline and only its parameters, with values of the right kind.

    ``parameters`` maps pipeline file stem -> {parameter name: KFP parameterType}.
    """
    problems = []
    for s in schedules:
        declared = parameters.get(s.pipeline_stem)
        if declared is None:
            problems.append(
                f"schedule {s.name!r}, field pipeline: {s.pipeline!r} is not a compiled pipeline "
                f"(have: {', '.join(sorted(parameters)) or 'none'})"
            )
            continue
        for key, value in s.parameters.items():
            kind = declared.get(key)
            if kind is None:
                problems.append(
                    f"schedule {s.name!r}, field parameters.{key}: pipeline {s.pipeline_stem} has no "
                    f"such parameter (has: {', '.join(sorted(declared))})"
                )
            elif not _fits(kind, value):
                problems.append(f"schedule {s.name!r}, field parameters.{key}: {value!r} is not a {kind}")
    if problems:
        raise ConfigError(
            "schedules do not match the compiled pipelines:\n    " + "\n    ".join(problems),
            fix="use a pipeline file stem from --pipelines-dir and that pipeline's parameter names "
            "and types (see the `root.inputDefinitions` of its YAML)",
        )


def _fits(kind: str, value: Any) -> bool:
    if kind == "STRING":
        return isinstance(value, str)
    if kind == "BOOLEAN":
        return isinstance(value, bool)
    if kind == "NUMBER_INTEGER":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "NUMBER_DOUBLE":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if kind == "STRUCT":
        return isinstance(value, dict)
    if kind == "LIST":
        return isinstance(value, list)
    return True
