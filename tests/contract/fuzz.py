"""Run schemathesis (its Python engine, every check) against a live API process and return its findings."""

from __future__ import annotations

from dataclasses import dataclass, field

SEED = 20261130
"""Fixed seed: the same cases every run (with ``deterministic`` generation, no example database)."""
MAX_EXAMPLES = 12
"""Generated cases per operation and phase; bounds the cost of ``make test`` (see README, Tests)."""


@dataclass
class Report:
    findings: list[str] = field(default_factory=list)
    waived: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    cases: int = 0
    operations: set[str] = field(default_factory=set)

    def text(self) -> str:
        return "\n\n".join([*self.findings, *self.errors])


def run(
    openapi_url: str,
    token: str,
    *,
    include_path: str | None = None,
    exclude_path: str | None = None,
    waived: dict[tuple[str, str], str | tuple[str, str]] | None = None,
) -> Report:
    """Fuzz every operation of the document at ``openapi_url`` with ``Authorization: Bearer <token>``.

    Phases: examples, coverage (boundary values, every negative mutation, undeclared methods), fuzzing and
    stateful; checks: every built-in check. ``include_path`` / ``exclude_path`` (regexes) select operations.
    ``waived`` maps ``(operation label, check name)`` to the reason a finding there is expected, or to
    ``(reason, text)`` when it is expected only if the answer's body contains ``text``; such findings go to
    ``Report.waived`` instead of ``Report.findings``.

    :returns: the findings (one line per failed check, with a curl to reproduce) and engine errors.
    """
    import schemathesis
    from schemathesis.config import CacheConfig, SchemathesisConfig
    from schemathesis.engine import events as ev
    from schemathesis.engine import from_schema
    from schemathesis.schemas import BaseSchema

    config = SchemathesisConfig(seed=SEED, cache=CacheConfig(enabled=False))  # no .schemathesis/ in the tree
    project = config.projects.override
    project.update(headers={"Authorization": f"Bearer {token}"}, request_timeout=20, workers=1)
    project.phases.update(phases=["examples", "coverage", "fuzzing", "stateful"])
    project.generation.update(
        max_examples=MAX_EXAMPLES, deterministic=True, database="none", unique_inputs=True, no_shrink=False
    )
    loaded = schemathesis.openapi.from_url(openapi_url, config=config)
    schema: BaseSchema = loaded
    if include_path:
        schema = schema.include(path_regex=include_path)
    if exclude_path:
        schema = schema.exclude(path_regex=exclude_path)
    waived = waived or {}
    report = Report()
    seen: set[str] = set()
    for event in from_schema(schema).execute():
        if isinstance(event, ev.ScenarioFinished):
            recorder = event.recorder
            report.cases += len(recorder.cases)
            report.operations.add(recorder.label)
            for case_id, checks in recorder.checks.items():
                for check in checks:
                    if check.failure_info is None:
                        continue
                    failure = check.failure_info.failure
                    node = recorder.cases.get(case_id)
                    operation = node.value.operation.label if node is not None else recorder.label
                    key = f"{operation} {check.name} {failure.title}"
                    if key in seen:
                        continue
                    response = recorder.find_response(case_id=case_id)
                    status = response.status_code if response is not None else "-"
                    body = (response.text or "") if response is not None else ""
                    answer = body[:400]
                    waiver = waived.get((operation, check.name))
                    if isinstance(waiver, tuple):
                        reason, text = waiver
                        if text in body:  # only this answer is expected: later findings of the key still count
                            report.waived.append(f"{operation}: {check.name}: {failure.title} (waived: {reason})")
                            continue
                    elif waiver is not None:
                        seen.add(key)
                        report.waived.append(f"{operation}: {check.name}: {failure.title} (waived: {waiver})")
                        continue
                    seen.add(key)
                    report.findings.append(
                        f"{operation}: {check.name}: {failure.title} (answered {status})\n"
                        f"  {failure.message.strip()[:600]}\n  {check.failure_info.code_sample}\n  -> {answer}"
                    )
        elif isinstance(event, ev.NonFatalError):
            report.errors.append(f"error in {event.label}: {event.info.title}: {event.info.message[:400]}")
        elif isinstance(event, ev.FatalError):
            report.errors.append(f"fatal: {event.exception!r}")
    return report
