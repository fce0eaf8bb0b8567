"""``netdicom2 fuzz``: run a fuzzing campaign against the core, our provider or a remote peer.

    netdicom2 fuzz --target local|provider|HOST:PORT [--budget 10m | --max-examples N]
                   [--seed S] [--corpus DIR] [--artim S] [--json F]
                   [--database DIR|redis://HOST:PORT|none] [--replay PATH ...]

Exit status: 0 when nothing but conforming behaviour (or, for a remote peer, only findings about
the peer) was seen; 1 when our own core or provider failed an oracle; 3 when a remote peer
crashed (refused connections afterwards); 2 for usage errors.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import Any

from hypothesis.database import DirectoryBasedExampleDatabase, ExampleDatabase

from fuzz.campaign import Stats, replay, run_campaign
from fuzz.check import HARD_FAILURES
from fuzz.targets import LocalTarget, Target

__all__ = ["add_subcommand", "main", "make_database", "parse_duration"]

DEFAULT_DATABASE = ".hypothesis/netdicom2-fuzz"


def parse_duration(text: str) -> float:
    """ "90", "90s", "10m", "1h" → seconds."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if match is None:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90s, 10m, 1h)")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def make_database(spec: str) -> ExampleDatabase | None:
    """The Hypothesis example database: a directory, Redis (redis://HOST:PORT[/DB]) or none."""
    if spec == "none":
        return None
    if spec.startswith("redis://"):
        import redis  # optional: only for a shared database
        from hypothesis.extra.redis import RedisExampleDatabase

        return RedisExampleDatabase(redis.Redis.from_url(spec))
    return DirectoryBasedExampleDatabase(spec)


def make_target(args: argparse.Namespace) -> Target:
    """local, provider, or HOST:PORT (a remote acceptor)."""
    if args.target == "local":
        return LocalTarget(artim=args.artim or 30.0)
    from fuzz.nettargets import ProviderTarget, RemoteTarget, parse_address

    if args.target == "provider":
        return ProviderTarget(artim=args.artim or 0.2)
    return RemoteTarget(parse_address(args.target), artim=args.artim)


def add_subcommand(subparsers: Any) -> None:
    """Register ``fuzz`` on the netdicom2 command line."""
    p = subparsers.add_parser(
        "fuzz",
        help="fuzz the DICOM UL: our core, our provider, or a remote peer",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--target", required=True, help="local | provider | HOST:PORT")
    p.add_argument("--budget", type=parse_duration, help="time budget, e.g. 90s, 10m")
    p.add_argument("--max-examples", type=int, help="number of cases to run")
    p.add_argument("--seed", type=int, help="make the run reproducible")
    p.add_argument("--corpus", type=Path, default=Path("fuzz-corpus"), help="findings go here")
    p.add_argument("--artim", type=float, help="the target's ARTIM (s) for the timing oracle")
    p.add_argument("--json", type=Path, help="write the summary as JSON to this file")
    p.add_argument("--html", type=Path, help="write a self-contained HTML page to this file")
    p.add_argument("--database", default=DEFAULT_DATABASE, help="DIR, redis://HOST:PORT or none")
    p.add_argument("--replay", type=Path, nargs="+", help="re-run saved cases (files or dirs)")
    p.add_argument("--codec-batch", type=int, default=64, help="codec mutants per local case")
    p.add_argument("--plain", action="store_true", help="plain progress lines, no rich display")
    p.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    """Run the campaign (or the replay) and print the summary."""
    if args.max_examples is not None and args.max_examples < 1:
        print("netdicom2 fuzz: --max-examples must be at least 1", file=sys.stderr)
        return 2
    try:
        target = make_target(args)
    except (ValueError, OSError) as exc:
        print(f"netdicom2 fuzz: bad target {args.target!r}: {exc}", file=sys.stderr)
        return 2
    try:
        if args.replay:
            return _replay(target, args.replay)
        display = _Display(plain=args.plain or not sys.stdout.isatty())
        timeline: Any = None
        if args.html is not None:  # reports/ is optional: only --html needs it
            from reports.html_fuzz import Timeline

            timeline = Timeline()
        with display:
            stats = run_campaign(
                target,
                max_examples=args.max_examples,
                budget=args.budget,
                seed=args.seed,
                database=make_database(args.database),
                corpus=args.corpus,
                # reports/: samples for --html
                progress=display.update if timeline is None else timeline.wrap(display.update),
                codec_batch=args.codec_batch if target.name == "local" else 0,
            )
    finally:
        target.close()
    summary = stats.summary()
    _print_summary(summary)
    if args.json is not None:
        args.json.write_text(json.dumps(summary, indent=1))
    if args.html is not None:  # reports/ renders the summary, with the samples taken above
        from reports.html_fuzz import write_fuzz_html

        write_fuzz_html(summary, args.html, timeline.finish(summary))
    if getattr(target, "crashed", False):
        return 3
    white_box = target.name in ("local", "provider")
    hard = any(f["verdict"] in HARD_FAILURES for f in summary["findings"])
    return 1 if white_box and hard else 0


def _replay(target: Target, paths: list[Path]) -> int:
    """Re-run corpus files; print one line each; 1 if any still fails."""
    files: list[Path] = []
    for path in paths:
        files += sorted(path.glob("*.json")) if path.is_dir() else [path]
    failed = 0
    for path, result in replay(target, files):
        verdict = result.judgement.verdict
        failed += verdict in HARD_FAILURES
        print(f"{path}: {verdict}: {result.outcome}: {result.judgement.detail}")
    return 1 if failed else 0


def _print_summary(summary: dict[str, Any]) -> None:
    """The end-of-campaign summary, readable."""
    print(f"\nnetdicom2 fuzz: {summary['target']}")
    print(
        f"  {summary['examples']} examples in {summary['seconds']} s "
        f"({summary['examples_per_second']}/s); codec inputs {summary['codec_inputs']} "
        f"({summary['codec_inputs_per_second']}/s)"
    )
    print(f"  verdicts: {summary['verdicts']}")
    print(f"  PS3.8 Table 9-10 cells reached: {summary['cells_reached']} of 123")
    print(f"  distinct outcome classes: {summary['distinct_outcomes']}")
    artim = summary["artim"]
    if artim["closes_measured"]:
        print(
            f"  ARTIM closes measured: {artim['closes_measured']}, error "
            f"{artim['error_min_s']} … {artim['error_max_s']} s (mean {artim['error_mean_s']})"
        )
    for finding in summary["findings"]:
        print(f"  [{finding['verdict']}] x{finding['count']} {finding['signature']}")
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
