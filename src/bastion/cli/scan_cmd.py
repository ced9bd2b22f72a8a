"""`bastion scan`: the model-file scanner as a linter-style command (text, JSON or SARIF)."""

from __future__ import annotations

import contextlib
import enum
import sys
from pathlib import Path

import typer

from bastion.cli.common import EXIT_ERROR, EXIT_FAILED, EXIT_OK, err_console, handle_errors, print_json
from bastion.scan import Policy, ScanReport, Severity, iter_files, scan_paths
from bastion.scan.sarif import to_sarif

_PROGRESS_MIN_BYTES = 64 * 1024**2  # show a bar only when there is enough to wait for


class OutputFormat(str, enum.Enum):
    text = "text"
    json = "json"
    sarif = "sarif"


def _text(report: ScanReport, threshold: Severity, quiet: bool) -> None:
    out = sys.stdout
    for f in report.findings:
        if quiet and f.severity < threshold:
            continue
        where = f"{f.path}:{f.location}:" if f.location else f"{f.path}:"
        out.write(f"{where} {f.severity.name} {f.rule_id} {f.message}\n")
    for e in report.errors:
        out.write(f"{e}: ERROR could not scan\n")
    if quiet:
        return
    counts = {s: 0 for s in Severity}
    for f in report.findings:
        counts[f.severity] += 1
    parts = [f"{n} {s.name.lower()}" for s, n in sorted(counts.items(), reverse=True) if n]
    failing = sum(n for s, n in counts.items() if s >= threshold)
    verdict = "FAILED" if failing or report.errors else "passed"
    mib = report.bytes_scanned / 1024**2
    out.write(f"Scanned {report.files_scanned} file(s), {mib:.1f} MiB: "
              f"{', '.join(parts) if parts else 'no findings'}"
              f"{f', {len(report.errors)} unreadable' if report.errors else ''} "
              f"-> {verdict} (fail on {threshold.name.lower()} and above)\n")
    out.flush()


def _run(paths: list[Path], policy: Policy, show_progress: bool, exclude: list[str]) -> ScanReport:
    if not show_progress:
        return scan_paths(paths, policy, exclude=exclude)
    listing_errors: list[str] = []
    files = list(iter_files(paths, listing_errors, exclude))
    total = 0
    for f in files:
        with contextlib.suppress(OSError):  # unreadable paths are reported by the scan itself
            total += f.stat().st_size
    if total < _PROGRESS_MIN_BYTES:
        report = scan_paths(files, policy)
        report.errors[:0] = listing_errors
        return report
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("scanning"), BarColumn(), DownloadColumn(), TimeElapsedColumn(),
                  console=err_console, transient=True) as prog:
        task = prog.add_task("scan", total=total)
        report = scan_paths(files, policy, on_file=lambda _p, size: prog.advance(task, size))
    report.errors[:0] = listing_errors
    return report


def register(app: typer.Typer) -> None:
    """Add ``bastion scan`` to the app."""

    @app.command("scan")
    @handle_errors
    def scan(
        paths: list[Path] = typer.Argument(..., help="Model files or folders (scanned recursively)."),
        output_format: OutputFormat = typer.Option(OutputFormat.text, "--format", "-f",
                                                   help="text (one line per finding), json or sarif."),
        fail_on: str = typer.Option("high", "--fail-on",
                                    help="Exit 1 when a finding is at least this severe: "
                                         "info, low, medium, high, critical."),
        config: Path | None = typer.Option(None, "--config", "-c",
                                           help="YAML policy extending the default allowlist "
                                                "(allow:, deny:, unknown_severity:, limits:)."),
        exclude: list[str] = typer.Option([], "--exclude", "-x", metavar="GLOB",
                                          help="Skip files and folders whose path (relative to the folder "
                                               "scanned) or name matches GLOB; repeatable. .git, .venv, "
                                               "__pycache__ and any virtual environment are skipped anyway."),
        quiet: bool = typer.Option(False, "--quiet", "-q",
                                   help="Only findings at or above --fail-on; no summary, no progress.", metavar=""),
        backend: str = typer.Option("local", "--backend", help="local | ray: shard the files over a Ray cluster "
                                    "(pip install 'bastion-ml\\[ray]')."),
        address: str | None = typer.Option(None, "--address", help="With --backend ray: auto, ray://HOST:PORT, "
                                           "or none to start one here."),
        workers: int | None = typer.Option(None, "--workers", help="With --backend ray: number of workers."),
    ) -> None:
        """Scan model files for code that runs on load, without loading them.

        Formats are recognised from content, never the extension: pickle, PyTorch (zip, legacy, TorchScript), joblib, NumPy, Keras, ONNX, safetensors and zip/tar/gzip/bz2/xz/7z containers.

        Exit codes: 0 clean, 1 findings at or above --fail-on, 2 a path could not be scanned, or the
        paths hold no files at all.

        Examples:

          bastion scan model.pt checkpoints/

          bastion scan --format sarif . > scan.sarif

          bastion scan --fail-on critical --config policy.yaml model.pkl

          bastion scan . --exclude 'data/*' --exclude '*.csv'

        A folder is walked recursively and every regular file in it is sniffed by content (text and JSON
        files come back clean); .git, .hg, .svn, .venv, __pycache__ and any folder holding pyvenv.cfg are
        skipped unless named on the command line.
        """
        threshold = Severity.parse(fail_on, "--fail-on")
        policy = Policy.from_file(config) if config is not None else Policy.default()
        show_progress = not quiet and err_console.is_terminal
        if backend != "local" or address is not None or workers is not None:
            from bastion.scale.backend import check_backend_args

            check_backend_args(backend, address, workers)
        if backend == "ray":
            from bastion.scale import open_backend, scan_sharded

            with open_backend("ray", address=address, workers=workers) as cluster:
                report = scan_sharded(cluster, paths, policy, exclude)
        else:
            report = _run(paths, policy, show_progress, exclude)
        if output_format is OutputFormat.json:
            body = report.to_dict()
            body["fail_on"] = threshold.name.lower()
            body["passed"] = report.is_clean(threshold)
            print_json(body)
        elif output_format is OutputFormat.sarif:
            from bastion import __version__

            print_json(to_sarif(report, __version__))
        else:
            _text(report, threshold, quiet)
        if report.errors:
            raise typer.Exit(EXIT_ERROR)
        if report.files_scanned == 0:
            # A gate aimed at an empty folder (artefacts not downloaded yet) must not go green.
            err_console.print("error: nothing to scan: the paths given hold no files", highlight=False)
            raise typer.Exit(EXIT_ERROR)
        raise typer.Exit(EXIT_OK if report.is_clean(threshold) else EXIT_FAILED)


def main() -> None:
    """``python -m bastion.cli.scan_cmd PATHS...``: ``bastion scan`` alone, for pre-commit hooks.

    The full ``bastion`` app imports every capability's module before it parses the command line; this
    entry point imports only the scanner."""
    app = typer.Typer(add_completion=False, pretty_exceptions_enable=False,
                      context_settings={"help_option_names": ["-h", "--help"]})
    register(app)
    app(prog_name="bastion scan")


if __name__ == "__main__":
    main()
