"""`harness` command line: run, validate, ls, plugins, report, compare."""
from __future__ import annotations

import argparse
import json
import os
import sys
import textwrap
import time
import warnings

from .api import HarnessError, SpecError

KIND_OF = {"encoders": "encoder", "datasets": "dataset", "tasks": "task"}


def _plugins(args):
    from .plugins import Plugins

    return Plugins(plugins_dirs=args.plugins_dir or ())


def _plan(args, plugins):
    from .cache import cache_dir_in_use
    from .spec import build_plan

    with cache_dir_in_use(args.cache_dir):  # what validation stores (label-map verdicts, written maps) goes there
        return build_plan(args.spec, plugins, args.override or ())


def cmd_validate(args) -> int:
    plan = _plan(args, _plugins(args))
    print(f"{args.spec}: OK — {len(plan.units)} units from {len(plan.encoders)} encoders, "
          f"{len(plan.datasets)} datasets and {len(plan.tasks)} tasks, as listed in run")
    return 0


def cmd_run(args) -> int:
    from . import interrupts, report
    from .runner import output_dir, run_plan

    plugins = _plugins(args)
    plan = _plan(args, plugins)  # everything is validated before anything is written
    out = output_dir(plan, args.out)
    if args.dry_run:
        print(f"{args.spec}: {len(plan.units)} units -> {out}")
        for u in plan.units:
            done = (out / "results" / f"{u.id}.json").is_file()
            print(f"  {u.id}{'  (result exists)' if done else ''}")
        return 0
    t0 = time.perf_counter()
    interrupts.install()
    try:
        results = run_plan(plan, out, force=args.force, show_progress=not args.no_progress,
                           cache_dir=args.cache_dir, log=lambda m: print(m, file=sys.stderr, flush=True),
                           workers=args.workers, encoders_per_pass=args.encoders_per_pass, threads=args.threads)
        if not results.main:  # torchrun: rank 0 reports
            return 0
        fresh = len(results) - results.skipped
        written = report.write_report(out, results, figure=fresh > 0 or not (out / "summary.png").exists(),
                                      plugins=plugins)
    except interrupts.Interrupted as exc:
        if os.environ.get("RANK", "0") == "0":
            done = f"{exc.done} of {exc.total}" if exc.total is not None else "some"
            print(f"interrupted: {done} units done; rerun the same command to resume", file=sys.stderr, flush=True)
        return exc.exit_code
    print(report.render(results, reports=report.report_plugins(plugins), out_dir=out))
    print(f"{len(results)} units: {fresh} run, {results.skipped} resumed, {results.failed} failed; "
          f"{results.forwards} encoder forwards; {time.perf_counter() - t0:.1f} s")
    print(f"results: {out / 'results'}  report: {written['markdown']}")
    figures = [str(p) for k, p in written.items() if k.endswith("figure")]
    if figures:
        print("figures: " + "  ".join(figures))
    return 1 if results.failed else 0


def _named(meta: dict, kind: str) -> str:
    """'name (plugin)' of a cache entry's encoder or dataset, from its metadata."""
    ident = meta.get(kind) if isinstance(meta.get(kind), dict) else {}
    name, plugin = meta.get(f"{kind}_name", "?"), ident.get("plugin")
    return f"{name} ({plugin})" if plugin and plugin != name else str(name)


def cmd_cache(args) -> int:
    """`harness cache ls|verify|prune`: inspect, check and clean a feature cache. verify and prune never
    remove what a live run needs: temporaries being written and entries locked by a run are reported as
    "in use" and kept (see harness.cache)."""
    from tabulate import tabulate

    from .cache import FeatureCache, default_cache_dir

    if args.action == "prune" and args.older_than is None and not args.match and not args.all \
            and args.max_size is None:
        args.parser.print_usage(sys.stderr)
        print(f"{args.parser.prog}: error: prune needs what to remove: --older-than DAYS, --max-size SIZE, "
              "--match TEXT or --all", file=sys.stderr)
        return 2
    cache = FeatureCache(args.cache_dir or default_cache_dir())
    entries = cache.entries()
    now = time.time()

    def meta_of(p):
        try:
            return json.loads(cache.meta_path(p).read_text())
        except (OSError, ValueError):
            return {}

    def temporaries(remove: bool) -> str:
        """One line per temporary (in use: kept; stale: removed when ``remove``); the summary's part."""
        busy = stale = 0
        for t in cache.temporaries():
            if t.in_use:
                busy += 1
                print(f"in use {t.path}: {t.why}; kept")
            else:
                gone = remove and cache.remove_stale(t)
                stale += 1
                print(f"stale {t.path}: {t.why}{' (deleted)' if gone else ''}")
        return f"; temporaries: {busy} in use, {stale} stale"

    if args.action == "ls":
        rows, total = [], 0
        for p in entries:
            m, st = meta_of(p), p.stat()
            total += st.st_size
            rows.append([p.stem[:12], _named(m, "encoder"), _named(m, "dataset"), m.get("split", "?"),
                         m.get("representation", "?"), f"{st.st_size / 1e6:.1f} MB",
                         f"{(now - st.st_mtime) / 86400:.1f} d", f"{(now - cache.last_used(p)) / 86400:.1f} d"])
        print(tabulate(rows, headers=["key", "encoder", "dataset", "split", "representation", "size", "age",
                                      "last used"]))
        temps = cache.temporaries()
        busy = sum(t.in_use for t in temps)
        print(f"{len(entries)} entries, {total / 1e9:.2f} GB in {cache.root}; temporaries: {busy} in use, "
              f"{len(temps) - busy} stale")
        return 0
    if args.action == "verify":
        bad, kept = [], 0
        for p in entries:
            problem = cache.check(p)
            if problem:
                bad.append(p)
                if not args.delete:
                    print(f"BAD {p}: {problem}")
                elif cache.remove_unused(p):
                    print(f"BAD {p}: {problem} (deleted)")
                else:
                    kept += 1
                    print(f"BAD {p}: {problem} (in use by a run, which will find it bad and recompute it; kept)")
        summary = temporaries(args.delete)
        print(f"{len(entries)} entries checked, {len(bad)} bad" + (f" ({kept} in use)" if kept else "") + summary)
        return 1 if bad and not args.delete else 0
    # prune
    max_size = None if args.max_size is None else _parse_size(args.max_size)
    sizes = {p: p.stat().st_size for p in entries}
    used = {p: cache.last_used(p) for p in entries}
    picked = []
    for p in sorted(entries, key=lambda p: used[p]):  # least recently used first
        m = meta_of(p)
        text = " ".join([_named(m, "encoder"), _named(m, "dataset"), str(m.get("split", "")),
                         str(m.get("representation", ""))])
        if args.older_than is not None and (now - used[p]) / 86400 < args.older_than:
            continue
        if args.match and args.match not in text:
            continue
        picked.append(p)
    # of the candidates, the least recently used (with --max-size: until the cache fits); an entry a live
    # run holds is kept, and the next candidate taken instead
    excess = None if max_size is None else sum(sizes.values()) - max_size
    freed = removed = kept = 0
    for p in picked:
        if excess is not None and excess <= 0:
            break
        if cache.in_use(p) if args.dry_run else not cache.remove_unused(p):
            kept += 1
            print(f"in use {p}: being read, or written and not yet read, by a live run; kept")
            continue
        print(f"{'would remove' if args.dry_run else 'removed'} {p}")
        removed, freed = removed + 1, freed + sizes[p]
        if excess is not None:
            excess -= sizes[p]
    summary = temporaries(not args.dry_run)
    print(f"{removed} entries, {freed / 1e9:.2f} GB {'would be ' if args.dry_run else ''}freed; "
          f"{(sum(sizes.values()) - freed) / 1e9:.2f} GB {'would be ' if args.dry_run else ''}left"
          + (f"; {kept} in use (kept)" if kept else "") + summary)
    return 0


_SIZE_UNITS = {"": 1, "B": 1, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12, "KIB": 2 ** 10, "MIB": 2 ** 20,
               "GIB": 2 ** 30, "TIB": 2 ** 40}


def _parse_size(text: str) -> int:
    """'500MB', '20 GB', '1.5GiB', '1000' (bytes) -> bytes."""
    import re

    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).upper() not in _SIZE_UNITS:
        raise HarnessError(f"harness cache prune --max-size: expected a size like 500MB, 20GB or 1.5GiB, "
                           f"got {text!r}")
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()])


def cmd_report(args) -> int:
    from . import report

    plugins = _plugins(args)
    results = report.load_results(args.dir)
    report.write_report(args.dir, results, plugins=plugins)
    print(report.render(results, args.format, report.report_plugins(plugins), out_dir=args.dir))
    return 0


def cmd_compare(args) -> int:
    """`harness compare A B`: each unit of output folder A against the same unit of B, A - B with its paired
    bootstrap interval; --json writes the rows."""
    from . import compare
    from .io import write_json_atomic

    rows = compare.across_runs(args.dir_a, args.dir_b)
    if not rows:
        raise HarnessError(f"harness compare: no unit of {args.dir_a} and {args.dir_b} has bootstrap intervals "
                           "(run them with bootstrap > 0)")
    print(compare.markdown(rows, args.format, f"{args.dir_a} (A) vs {args.dir_b} (B)"))
    if args.json:
        write_json_atomic(args.json, rows)
    return 0


def _default_text(opt) -> str:
    from .api import REQUIRED

    return "(required)" if opt.default is REQUIRED else json.dumps(opt.default)


def cmd_ls_one(plugins, kind: str, name: str) -> int:
    """`harness ls KIND NAME`: one plugin's description, origin and options (type, default, help)."""
    from tabulate import tabulate

    from .spec import _type_name

    try:
        reg = plugins.get(kind, name)
    except KeyError as exc:
        raise HarnessError(str(exc).strip("'\"")) from None
    cls = reg.cls
    print(f"{name} ({kind}, {reg.origin}{f', version {v}' if (v := plugins.version_of(reg.origin)) else ''})")
    doc = (cls.__doc__ or "").strip()
    if doc:
        print(textwrap.indent(doc, "  "))
    extra = {"encoder": ("representations", "pretraining"), "dataset": ("splits", "level", "levels", "hierarchy"),
             "task": ("headline",)}[kind]
    for attr in extra:
        value = getattr(cls, attr, None)
        if value and not isinstance(value, property):  # per-instance values (e.g. splits by format) vary
            print(f"  {attr}: {', '.join(value) if isinstance(value, (list, tuple)) else value}")
    rows = []
    for opt_name, opt in cls.option_schema().items():
        kind_text = _type_name(opt.type).replace("an ", "").replace("a ", "")
        if opt.path:
            kind_text += f" ({opt.path} path)"
        if opt.nullable:
            kind_text += " or null"
        help_text = opt.help + (f" [choices: {', '.join(map(str, opt.choices))}]" if opt.choices else "")
        rows.append([opt_name, kind_text, _default_text(opt), help_text])
    print()
    print(tabulate(rows, headers=["option", "type", "default", "help"], tablefmt="simple",
                   maxcolwidths=[None, None, 24, 70]) if rows else "  (no options)")
    return 0


def cmd_ls(args) -> int:
    """`harness ls [KIND [NAME]]`: every kind's plugins (three tables), one kind's, or one plugin."""
    from tabulate import tabulate

    plugins = _plugins(args)
    kinds = [KIND_OF.get(args.kind, args.kind)] if args.kind else list(KIND_OF.values())
    if args.name:
        return cmd_ls_one(plugins, kinds[0], args.name)
    for i, kind in enumerate(kinds):
        table = plugins.registry[kind]
        if len(kinds) > 1:
            print(f"{'' if i == 0 else chr(10)}{kind}s ({len(table)})")
        rows = [[name, reg.origin, reg.description] for name, reg in sorted(table.items())]
        print(tabulate(rows, headers=["name", "origin", "description"], tablefmt="simple"))
    return 0


def cmd_plugins(args) -> int:
    plugins = _plugins(args)
    print(json.dumps(plugins.describe(), indent=2))
    return 0


def _at_least(least: int):
    """An argparse type: an integer >= least (a bad value is a usage error, exit 2)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < least:
            raise argparse.ArgumentTypeError(f"expected an integer >= {least}, got {text!r}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--plugins-dir", action="append", metavar="DIR",
                        help="load every *.py in DIR as a plugin (repeatable)")
    p = argparse.ArgumentParser(prog="harness", description="partbench: part- and object-awareness of frozen encoders")
    sub = p.add_subparsers(dest="cmd", required=True)

    def spec_cmd(name, help):
        sp = sub.add_parser(name, help=help, parents=[common])
        sp.add_argument("spec", help="YAML spec file")
        sp.add_argument("-o", "--override", action="append", metavar="KEY=VALUE",
                        help="override a spec value, e.g. -o tasks.retrieval.options.exclude_self=true")
        sp.add_argument("--cache-dir", help="cache directory: features, label-map checks, written label maps "
                        "(default: spec cache_dir, else $HARNESS_CACHE_DIR or ~/.cache/partbench/features)")
        return sp

    r = spec_cmd("run", "run a spec")
    r.add_argument("--out", help="output directory (default: spec output_dir or results/<spec name>)")
    r.add_argument("--force", action="store_true", help="recompute units whose results exist")
    r.add_argument("--dry-run", action="store_true", help="validate and list the units, compute nothing")
    r.add_argument("--no-progress", action="store_true", help="hide progress bars")
    r.add_argument("--workers", type=_at_least(0), metavar="N",
                   help="data-loader worker processes for feature extraction (default: spec, else from the CPU count)")
    r.add_argument("--threads", type=_at_least(1), metavar="N",
                   help="torch threads of the main process (default: spec, else OMP_NUM_THREADS, else the cores "
                        "this process may use, shared among torchrun's local ranks)")
    r.add_argument("--encoders-per-pass", type=_at_least(1), metavar="N",
                   help="encoders fed by one pass over the data (default: all that need it)")
    r.set_defaults(func=cmd_run)
    spec_cmd("validate", "validate a spec without computing anything").set_defaults(func=cmd_validate)
    ls = sub.add_parser("ls", help="list registered encoders, datasets and tasks", parents=[common])
    ls.add_argument("kind", nargs="?", choices=sorted(KIND_OF) + sorted(KIND_OF.values()), metavar="KIND",
                    help="encoders, datasets or tasks (or encoder, dataset, task); default: all three")
    ls.add_argument("name", nargs="?", help="show this plugin's options (type, default, help)")
    ls.set_defaults(func=cmd_ls)
    sub.add_parser("plugins", help="loaded plugins as JSON", parents=[common]).set_defaults(func=cmd_plugins)
    c = sub.add_parser("cache", help="list, verify or prune the feature cache")
    c.add_argument("action", choices=["ls", "verify", "prune"])
    c.add_argument("--cache-dir", help="feature cache directory (default $HARNESS_CACHE_DIR or ~/.cache/partbench)")
    c.add_argument("--delete", action="store_true", help="verify: remove the bad entries")
    c.add_argument("--older-than", type=float, metavar="DAYS",
                   help="prune: entries not used (read by a run, or written) for DAYS or more")
    c.add_argument("--max-size", metavar="SIZE",
                   help="prune: least recently used entries until the cache holds at most SIZE (e.g. 50GB)")
    c.add_argument("--match", metavar="TEXT", help="prune: entries whose encoder/dataset/split/representation contain TEXT")
    c.add_argument("--all", action="store_true", help="prune: every entry")
    c.add_argument("--dry-run", action="store_true", help="prune: list, remove nothing")
    c.set_defaults(func=cmd_cache, parser=c)
    rep = sub.add_parser("report", help="re-render tables from an output directory's result JSON")
    rep.add_argument("dir")
    rep.add_argument("--format", default="simple", help="tabulate table format (simple, github, latex, ...)")
    rep.set_defaults(func=cmd_report)
    cmp_ = sub.add_parser("compare", help="paired differences of the same units in two output directories")
    cmp_.add_argument("dir_a")
    cmp_.add_argument("dir_b")
    cmp_.add_argument("--format", default="simple", help="tabulate table format (simple, github, latex, ...)")
    cmp_.add_argument("--json", metavar="FILE", help="also write the differences as JSON")
    cmp_.set_defaults(func=cmd_compare)
    return p


def main(argv=None) -> int:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    args = build_parser().parse_args(argv)
    if not hasattr(args, "plugins_dir"):
        args.plugins_dir = None
    # plugin load problems are shown as one line each, not as Python warnings with source lines
    warnings.showwarning = lambda msg, cat, *a, **k: print(f"warning: {msg}", file=sys.stderr)
    try:
        return args.func(args)
    except HarnessError as exc:
        rank = os.environ.get("RANK", "0")
        if rank == "0":
            for line in str(exc).splitlines() or [""]:  # a spec with several bad entries: one line each
                print(f"error: {line}", file=sys.stderr)
        elif not isinstance(exc, SpecError):  # a spec error is every rank's alike: rank 0 says it
            print(f"error: rank {rank}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the output went to a command that stopped reading (harness ls | head)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        return 0


if __name__ == "__main__":
    sys.exit(main())
