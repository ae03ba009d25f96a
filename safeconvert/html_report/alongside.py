"""`--html PAGE` on the commands: the page is rendered from the JSON report the run writes anyway, so it is
there whatever the outcome (verified, not verified, failed), exactly like `--report`."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..report import pages_rendered


@contextmanager
def html_written(html: Path | None, report_json: Path | None) -> Iterator[Path | None]:
    """Yield the JSON report path the run must write (a scratch file when only --html was asked for);
    render the page from it when the run ends."""
    if html is None:
        yield report_json
        return
    scratch = None if report_json is not None else Path(tempfile.mkdtemp(prefix="safeconvert-report-"))
    json_path = Path(report_json) if report_json is not None else scratch / "report.json"
    before = _stamp(json_path)  # a report left by an earlier run is never rendered as this run's page
    try:
        with pages_rendered(html):  # the run refuses a page that would overwrite a model, like --report
            yield json_path
    except BaseException as exc:
        if _stamp(json_path) != before:
            _render(json_path, Path(html), strict=_is_normal_exit(exc))
        raise
    else:
        if _stamp(json_path) != before:
            _render(json_path, Path(html), strict=True)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)


def _stamp(path: Path) -> tuple[int, int, int] | None:
    """Which file is at `path` (reports are written by a rename: a new one is a new inode)."""
    try:
        found = path.stat()
    except OSError:
        return None
    return found.st_ino, found.st_mtime_ns, found.st_size


def check_page_path(html: Path, option: str = "--html") -> None:
    """Fail before a long run, not after it, when the page cannot be written where asked."""
    from ..errors import BadInputError

    html = Path(html)
    if html.is_dir():
        raise BadInputError(f"{option} {html} is a directory; give a file name such as report.html")
    if not html.parent.resolve().is_dir():
        raise BadInputError(f"{option} {html}: directory {html.parent} does not exist")


def _render(json_path: Path, html: Path, strict: bool) -> None:
    """Render the page; while another error is on its way out, a rendering failure must not replace it."""
    from . import html_from_json

    if not json_path.is_file():
        return
    try:
        html_from_json(json_path, html)
    except Exception:
        if strict:
            raise


def _is_normal_exit(exc: BaseException) -> bool:
    """The commands end with typer.Exit(code) on every completed run, verified or not."""
    import typer

    return isinstance(exc, typer.Exit)
