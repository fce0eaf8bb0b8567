"""``netdicom2 fuzz``: run a fuzzing campaign against the core, our provider or a remote peer.

    netdicom2 fuzz (--target local|provider|HOST:PORT | --listen [HOST:]PORT [--spawn CMD])
                   [--budget 10m | --max-examples N]
                   [--seed S] [--corpus DIR] [--artim S] [--json F] [--html F]
                   [--database DIR|redis://HOST:PORT|none] [--replay PATH ...]
                   [--shrink-budget S] [--fail-on finding|crash|never] [--codec-batch N]
                   [--jobs N]

Exit status: 0 nothing found; 1 a finding against the target (or our own stack), or a runtime
error (nothing listens at HOST:PORT, no Redis server); 3 the peer crashed or stopped answering;
2 a usage error; 130/143 interrupted (after the summary and partial reports). ``--fail-on
crash`` ignores findings, ``--fail-on never`` always exits 0 after a campaign. ``--replay``:
0 when every case conforms now, 1 when one still fails, 3 when the peer crashed.
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from hypothesis.database import DirectoryBasedExampleDatabase, ExampleDatabase

from netdicom2.cli import (
    JobError,
    UsageError,
    bounded_int,
    connect_error,
    host_port,
    listen_address,
    output_path,
    seconds,
)
from netdicom2.fuzz.campaign import Stats, replay, run_campaign
from netdicom2.fuzz.check import HARD_FAILURES
from netdicom2.fuzz.targets import LocalTarget, Target

__all__ = ["add_subcommand", "main", "make_database", "parse_duration"]

DEFAULT_DATABASE = ".hypothesis/netdicom2-fuzz"
EXIT_FINDING, EXIT_CRASH = 1, 3


def parse_duration(text: str) -> float:
    """ "90", "90s", "10m", "1h" → seconds (more than 0)."""
    match = re.fullmatch(r"\s*(-?\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 10m, 1h)")
    value = float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]
    if value <= 0:
        raise argparse.ArgumentTypeError(f"duration {text!r} is not more than 0")
    return value


def _shrink_duration(text: str) -> float:
    """A duration that may be 0 (no shrinking)."""
    return 0.0 if text.strip() in ("0", "0s") else parse_duration(text)


def _target(text: str) -> str:
    """local, provider or HOST:PORT (port 1..65535)."""
    if text in ("local", "provider"):
        return text
    try:
        host_port(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (or local, provider)") from None
    return text


def _spawn(text: str) -> str:
    """A requestor command line whose program exists ({port} is replaced per case)."""
    try:
        argv = shlex.split(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"cannot parse {text!r}: {exc}") from None
    if not argv:
        raise argparse.ArgumentTypeError("an empty command")
    if shutil.which(argv[0]) is None:
        raise argparse.ArgumentTypeError(f"no such program: {argv[0]!r} (in {text!r})")
    return text


def _corpus(text: str) -> Path:
    """A folder for findings: it exists or its parent does, and it can be written."""
    path = Path(text)
    if path.exists() and not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder for findings")
    output_path(str(path / "x") if path.is_dir() else text)
    return path


def make_database(spec: str) -> ExampleDatabase | None:
    """The Hypothesis example database: a directory, Redis (redis://HOST:PORT[/DB]) or none."""
    if spec == "none":
        return None
    if spec.startswith("redis://"):
        try:
            import redis  # optional: only for a shared database
            from hypothesis.extra.redis import RedisExampleDatabase
        except ImportError:
            raise JobError(
                f"--database {spec} needs the redis package (pip install redis)"
            ) from None
        try:
            client = redis.Redis.from_url(spec, socket_connect_timeout=3, socket_timeout=10)
            client.ping()
        except ValueError as exc:
            raise UsageError(f"--database {spec}: {exc}") from None
        except redis.exceptions.RedisError as exc:
            raise JobError(f"cannot reach the Redis example database {spec}: {exc}") from None
        return RedisExampleDatabase(client)
    return DirectoryBasedExampleDatabase(spec)


def make_target(args: argparse.Namespace) -> Target:
    """local, provider, HOST:PORT (a remote acceptor), or --listen (a remote requestor)."""
    if args.listen is not None:
        from netdicom2.fuzz.listen import RequestorTarget

        host, port = args.listen
        try:
            return RequestorTarget((host, port), spawn=args.spawn, artim=args.artim)
        except OSError as exc:
            reason = exc.strerror or str(exc)
            raise JobError(f"cannot listen on {host}:{port}: {reason}") from None
    if args.target == "local":
        return LocalTarget(artim=args.artim or 30.0)
    from netdicom2.fuzz.nettargets import ProviderTarget, RemoteTarget

    if args.target == "provider":
        return ProviderTarget(artim=args.artim or 0.2)
    return RemoteTarget(host_port(args.target), artim=args.artim)


def add_subcommand(subparsers: Any) -> None:
    """Register ``fuzz`` on the netdicom2 command line."""
    p = subparsers.add_parser(
        "fuzz",
        help="fuzz the DICOM UL: our core, our provider, or a remote peer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    # "--budget -5s" is a bad value, not an option: let argparse hand it to the type.
    p._negative_number_matcher = re.compile(r"^-\d+(\.\d+)?[smh]?$")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--target", type=_target, help="local | provider | HOST:PORT (acceptor)")
    where.add_argument(
        "--listen",
        type=listen_address,
        help="[HOST:]PORT: play a hostile acceptor to a requestor (default host 127.0.0.1)",
    )
    p.add_argument(
        "--spawn", type=_spawn, help="with --listen: start this requestor per case ({port})"
    )
    p.add_argument("--budget", type=parse_duration, help="time budget, e.g. 90s, 10m")
    p.add_argument("--max-examples", type=bounded_int(1, 10**9), help="number of cases to run")
    p.add_argument("--seed", type=int, help="make the run reproducible")
    p.add_argument("--corpus", type=_corpus, default=Path("fuzz-corpus"), help="findings go here")
    p.add_argument("--artim", type=seconds(), help="the target's ARTIM (s) for the timing oracle")
    p.add_argument("--json", type=output_path, help="write the summary as JSON to this file")
    p.add_argument("--html", type=output_path, help="write a self-contained HTML page")
    p.add_argument("--database", default=DEFAULT_DATABASE, help="DIR, redis://HOST:PORT or none")
    p.add_argument("--replay", type=Path, nargs="+", help="re-run saved cases (files or dirs)")
    p.add_argument(
        "--codec-batch",
        type=bounded_int(0, 100_000),
        default=64,
        help="codec mutants checked per local case (0: none)",
    )
    p.add_argument(
        "--shrink-budget",
        type=_shrink_duration,
        default=10.0,
        help="time for shrinking findings against the target, within --budget (0: none)",
    )
    p.add_argument(
        "--fail-on",
        choices=("finding", "crash", "never"),
        default="finding",
        help="exit 1 on a finding and 3 on a crash (finding), 3 on a crash only, or 0",
    )
    p.add_argument(
        "--jobs",
        type=bounded_int(1, 64),
        default=1,
        help="cases at once against a remote peer (backs off on 'local limit exceeded')",
    )
    p.add_argument("--plain", action="store_true", help="plain progress lines, no rich display")
    p.set_defaults(handler=main)


def _replay_files(paths: list[Path]) -> list[Path]:
    """The corpus files to replay, each checked to be a saved fuzz case (before any run)."""
    files: list[Path] = []
    for path in paths:
        if path.is_dir():
            files += sorted(path.glob("*.json"))
        elif path.exists():
            files.append(path)
        else:
            raise UsageError(f"--replay {path}: no such file or folder")
    if not files:
        raise UsageError(f"--replay {' '.join(map(str, paths))}: no .json case in it")
    from netdicom2.fuzz.strategies import Case

    for path in files:
        try:
            record = json.loads(path.read_text())
            Case.from_json(record["case"])
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise UsageError(f"--replay {path}: not a JSON fuzz case ({exc})") from None
        except (KeyError, TypeError, ValueError):
            raise UsageError(
                f"--replay {path}: not a fuzz corpus file (no valid 'case'; "
                "a conformance or replay report?)"
            ) from None
    return files


def main(args: argparse.Namespace) -> int:
    """Run the campaign (or the replay) and print the summary."""
    if args.spawn is not None and args.listen is None:
        raise UsageError("--spawn needs --listen (it starts the requestor under test)")
    files = _replay_files(args.replay) if args.replay else []
    database = make_database(args.database) if not files else None
    target = make_target(args)
    try:
        _check(target)
        if files:
            return _replay(target, files)
        return _campaign(args, target, database)
    finally:
        target.close()


def _check(target: Target) -> None:
    """A remote target must be reachable and answer before the campaign starts."""
    check = getattr(target, "check", None)
    if check is None or not hasattr(target, "connector"):
        return
    host, port = target.address  # type: ignore[attr-defined]
    try:
        check()
    except ConnectionError as exc:
        if exc.args and isinstance(exc.args[0], str) and "answered nothing" in exc.args[0]:
            raise JobError(exc.args[0], status=EXIT_CRASH) from None
        raise JobError(connect_error(exc, host, port)) from None
    except OSError as exc:
        raise JobError(connect_error(exc, host, port)) from None


def _campaign(args: argparse.Namespace, target: Target, database: ExampleDatabase | None) -> int:
    """Fuzz, print the summary, write the reports (marked partial when interrupted)."""
    display = _Display(plain=args.plain or not sys.stdout.isatty())
    timeline: Any = None
    if args.html is not None:  # reports/ is optional: only --html needs it
        from netdicom2.reports.html_fuzz import Timeline

        timeline = Timeline()
    with display:
        stats = run_campaign(
            target,
            max_examples=args.max_examples,
            budget=args.budget,
            seed=args.seed,
            database=database,
            corpus=args.corpus,
            progress=display.update if timeline is None else timeline.wrap(display.update),
            codec_batch=args.codec_batch if target.name == "local" else 0,
            shrink_budget=args.shrink_budget,
            jobs=args.jobs,
        )
    stats.peer = dict(getattr(target, "identity", {}) or {})
    summary = stats.summary()
    _print_summary(summary)
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=1))
    if args.html is not None:  # reports/ renders the summary, with the samples taken above
        from netdicom2.reports.html_fuzz import write_fuzz_html

        write_fuzz_html(summary, args.html, timeline.finish(summary))
    if stats.interrupted is not None:
        raise stats.interrupted
    return exit_status(summary, args.fail_on)


def exit_status(summary: dict[str, Any], fail_on: str) -> int:
    """0 nothing found, 1 a finding, 3 the peer crashed or stopped answering (``--fail-on``)."""
    if fail_on == "never":
        return 0
    if summary["stopped"] or any(f["verdict"] == "crash" for f in summary["findings"]):
        return EXIT_CRASH
    if fail_on == "finding" and any(f["verdict"] in HARD_FAILURES for f in summary["findings"]):
        return EXIT_FINDING
    return 0


def _replay(target: Target, files: list[Path]) -> int:
    """Re-run corpus files; print one line each; 1 if one still fails, 3 if the peer crashed."""
    failed = crashed = 0
    for path, result in replay(target, files):
        verdict = result.judgement.verdict
        failed += verdict in HARD_FAILURES
        crashed += verdict == "crash"
        print(f"{path}: {verdict}: {result.outcome}: {result.judgement.detail}")
    return EXIT_CRASH if crashed else EXIT_FINDING if failed else 0


def _counts(counter: dict[str, int]) -> str:
    """ "conform 2994, deviation 6" (largest first), or "none"."""
    items = sorted(((n, k) for k, n in counter.items() if n), reverse=True)
    return ", ".join(f"{k} {n}" for n, k in items) or "none"


def _print_summary(summary: dict[str, Any]) -> None:
    """The end-of-campaign summary, readable."""
    partial = " (partial: interrupted)" if summary["partial"] else ""
    print(f"\nnetdicom2 fuzz: {summary['target']}{partial}")
    peer = summary.get("peer") or {}
    if peer:
        print(f"  peer: {' '.join(peer.values())}")
    print(
        f"  {summary['examples']} examples in {summary['seconds']} s "
        f"({summary['examples_per_second']}/s); codec inputs {summary['codec_inputs']} "
        f"({summary['codec_inputs_per_second']}/s)"
    )
    print(f"  verdicts: {_counts(summary['verdicts'])}")
    setup = summary["setup_failed"]
    if any(setup.values()):
        print(f"  setup failures (not judged): {_counts(setup)}")
    if summary["interpretations"]:
        print(f"  [interp] other readings (notes): {_counts(summary['interpretations'])}")
    print(f"  PS3.8 Table 9-10 cells reached: {summary['cells_reached']} of 123")
    print(f"  distinct outcome classes: {summary['distinct_outcomes']}")
    artim = summary["artim"]
    if artim["closes_measured"]:
        print(
            f"  ARTIM closes measured: {artim['closes_measured']}, error "
            f"{artim['error_min_s']} … {artim['error_max_s']} s (mean {artim['error_mean_s']})"
        )
    if summary["stopped"]:
        print(f"  peer: {summary['stopped']}")
    if summary["backoffs"]:
        print(f"  --jobs: backed off {summary['backoffs']} times (the peer was busy)")
    findings = summary["findings"]
    print(
        f"  findings: {len(findings)} causes from {summary['failing_cases']} failing cases "
        f"({summary['distinct_by_scenario']} when keyed by scenario too)"
        + (
            f"; {summary['unconfirmed_findings']} did not reproduce (dropped)"
            if summary["unconfirmed_findings"]
            else ""
        )
    )
    for finding in findings:
        shrunk = f"; {finding['shrunk']}" if finding["shrunk"] else ""
        print(f"  [{finding['verdict']}] x{finding['count']} {finding['signature']}{shrunk}")
        if finding["repro"]:
            print(f"      {finding['repro']}")


class _Display:
    """Progress: a rich live line when available and on a terminal, plain lines otherwise."""

    def __init__(self, *, plain: bool) -> None:
        self.live: Any = None
        self.last = 0.0
        if not plain:
            try:
                from rich.live import Live
            except ImportError:  # pragma: no cover - rich is optional
                plain = True
            else:
                self.live = Live("", refresh_per_second=4, transient=True)
        self.plain = plain

    def __enter__(self) -> _Display:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def update(self, stats: Stats) -> None:
        """Show examples, rate, distinct outcomes, findings and time left."""
        now = time.monotonic()
        if now - self.last < (0.25 if self.live is not None else 5.0):
            return
        self.last = now
        left = stats.time_left()
        text = (
            f"{stats.target}: {stats.examples} examples, {stats.rate:.1f}/s, "
            f"{stats.distinct_outcomes()} outcome classes, {len(stats.cells)} cells, "
            f"{len(stats.findings)} findings" + ("" if left is None else f", {left:.0f} s left")
        )
        if self.live is not None:
            self.live.update(text)
        else:
            print(text, file=sys.stderr, flush=True)
