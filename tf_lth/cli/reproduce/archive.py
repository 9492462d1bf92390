"""Finished sub-runs kept apart from their run directories (`--archive=DIR`).

A reproduction at the paper's budget takes longer than a machine may live: where the run
directories can vanish (a machine handed out anew, a scratch disk cleaned), each finished
sub-run's numbers are copied to DIR/NAME.json, tens of kilobytes: its results.json (an
export's report), its flags and its status record (seconds, the commits that ran it). A
later invocation, on a fresh machine with an empty --out_dir, counts a sub-run as finished
when DIR holds its record made with the same flags, and the report reads its numbers from
there. Weights are not kept: an archived-only sub-run is reported, not resumed or exported
(a sub-run that needs its weights says so). DIR/invocations.json adds up the wall time of
every invocation, on every machine (docs/architecture.md, Reproduction archive).
"""

from __future__ import annotations

import json
import os
import platform

from tf_lth.core import run_files

INVOCATIONS = "invocations.json"


def record_path(archive_dir: str, name: str) -> str:
    return os.path.join(archive_dir, *name.split("/")) + ".json"


def flag_identity(flags: dict) -> str:
    """The sub-run's flags as one canonical string: equal flags, equal strings."""
    return json.dumps(json.loads(json.dumps(flags)), sort_keys=True)


def _payload(run, out_dir: str) -> dict | None:
    """What the report reads of a finished sub-run (None when it is not on disk)."""
    run_dir = run.run_dir(out_dir)
    if run.kind == "export":
        report = run_files.read_json_or_none(os.path.join(run_dir, "export",
                                                          "export_report.json"))
        marker = run_files.read_json_or_none(run.export_marker(out_dir))
        return {"export_report": report, "marker": marker} if report and marker else None
    results = run_files.read_json_or_none(os.path.join(run_dir, "results.json"))
    return {"results": results} if results else None


def save(archive_dir: str, run, out_dir: str, status: dict) -> bool:
    """Archives a finished sub-run; False (nothing written) when its files are missing."""
    payload = _payload(run, out_dir)
    if payload is None:
        return False
    kept = {key: value for key, value in status.items() if key not in ("log", "archived")}
    run_files.write_json(record_path(archive_dir, run.name), {
        "name": run.name, "kind": run.kind, "flags": run.flags, "status": kept,
        "machine": f"{platform.node() or 'unknown'} ({os.cpu_count()} CPU cores)",
        **payload})
    return True


def load(archive_dir: str | None, runs: list) -> tuple:
    """({name: record} of the sub-runs archived with the plan's flags, [names whose record
    has other flags]: the plan changed since, so they run again)."""
    matching, stale = {}, []
    if not archive_dir:
        return matching, stale
    for run in runs:
        record = run_files.read_json_or_none(record_path(archive_dir, run.name))
        if not record:
            continue
        if flag_identity(record.get("flags") or {}) == flag_identity(run.flags):
            matching[run.name] = record
        else:
            stale.append(run.name)
    return matching, stale


def results_of(record: dict, run) -> dict | None:
    """The archived results.json (for an export: its report, at the plan's round)."""
    if run.kind == "export":
        marker = record.get("marker") or {}
        return record.get("export_report") if marker.get("round") == run.export_round else None
    return record.get("results")


def add_invocation(archive_dir: str, entry: dict) -> None:
    """Records one invocation's wall time (and where it ran) in DIR/invocations.json: an
    entry with the `id` of one already there replaces it (a running invocation updates its
    own entry as it goes, so a machine that vanishes mid-run leaves its time so far)."""
    path = os.path.join(archive_dir, INVOCATIONS)
    entries = invocations(archive_dir)
    same = [index for index, old in enumerate(entries)
            if entry.get("id") and old.get("id") == entry.get("id")]
    if same:
        entries[same[0]] = entry
    else:
        entries.append(entry)
    run_files.write_json(path, {"invocations": entries})


def invocations(archive_dir: str | None) -> list:
    if not archive_dir:
        return []
    saved = run_files.read_json_or_none(os.path.join(archive_dir, INVOCATIONS)) or {}
    return list(saved.get("invocations") or [])


def wall_seconds(archive_dir: str | None) -> float | None:
    """The wall seconds of every archived invocation together (None when none is)."""
    entries = invocations(archive_dir)
    return sum(float(entry.get("seconds") or 0.0) for entry in entries) if entries else None
