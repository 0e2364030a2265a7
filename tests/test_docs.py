"""The README's and the docs' code blocks run as written, and their commands parse.

Every fenced code block says what it is in its info string: the first word is the
language, further words are attributes.

* ``sh``: a shell script, run with ``bash -euo pipefail``. A page's blocks run in order,
  in one fresh working directory per page that looks like a checkout (``.venv``,
  ``deploy``, ``models`` and ``scripts`` link to the repository's), with the venv's
  ``robot-daemon`` first on ``PATH``, ``HOME`` in the working directory and Python
  warnings as errors. Each must exit 0 within ``BLOCK_TIMEOUT_S``; keep it to seconds.
* ``python``: a complete program, run the same way (``python notest``: a fragment).
* ``console``: shell commands the test cannot run (root, systemd, a live peer, minutes
  of work), or a transcript: ``$ command`` lines, each followed by its output.
  ``console run``: a transcript the test runs, requiring exactly the output shown.
* ``text``, ``toml``, ``json``, ``ini``, ``yaml``: not run. ``toml`` blocks are daemon settings
  files: each must load with :func:`robot_daemon.config.load`.

Indented (unfenced) blocks are treated as ``console``. Every ``robot-daemon`` command of
a ``sh``, ``console`` or indented block (also ``.venv/bin/robot-daemon ...`` and
``python -m robot_daemon ...``) is parsed by the real argument parser, and every flag of
an inline code span that names a subcommand (a synopsis such as
``bag play IN --bind EP [--rate R]``) must exist, so that renaming a flag in
``robot_daemon/cli/`` breaks this test at the doc's line. A few pages show what the
code prints or writes; those examples are compared with the code at the end.
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import dataclasses
import difflib
import io
import os
import re
import shlex
import signal
import subprocess
import sys
import tomllib
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from robot_daemon import config, wire
from robot_daemon.cli import build_parser
from robot_daemon.errors import ConfigError
from robot_daemon.serve import report
from robot_daemon.serve.daemon import SERVING_ENV, SERVING_NICE

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "models/README.md"]
#: Top-level directories of the checkout that the docs name by relative path.
CHECKOUT_LINKS = ("deploy", "models", "scripts")
BLOCK_TIMEOUT_S = 60

LANGUAGES = {"sh", "console", "python", "text", "toml", "json", "ini", "yaml", "promql", "sql"}
ATTRIBUTES = {"python": {"notest"}, "console": {"run"}}
COMMANDS = {"sh", "console", ""}  # blocks whose commands are parsed; "" is an indented one
_FENCE = re.compile(r"^(`{3,}|~{3,})\s*(.*)$")
_SEPARATORS = {";", "&", "&&", "||", "|", "(", ")", "!"}
_REDIRECTS = {"<", ">", ">>", "<<", "<<<", ">&", "<&", "&>"}
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_PYTHON = re.compile(r"^python(3(\.\d+)?)?$")
_HEREDOC = re.compile(r"<<-?\s*['\"]?(\w+)['\"]?")


@dataclass(frozen=True)
class Block:
    """One code block of a page.

    ``line`` is the 1-based number of its first line of contents; ``lines`` the 0-based
    indices of all its lines, fences included; ``info`` is empty for an indented block.
    """

    page: Path
    line: int
    lines: range
    fenced: bool
    info: tuple[str, ...]
    text: str

    @property
    def lang(self) -> str:
        return self.info[0] if self.info else ""

    @property
    def attributes(self) -> tuple[str, ...]:
        return self.info[1:]

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


@dataclass
class Step:
    """One shell command of a block, its line, and the output a transcript shows for it."""

    line: int
    command: str
    output: list[str] = field(default_factory=list)


def blocks(page: Path) -> list[Block]:
    """The fenced and indented code blocks of a Markdown page, in order."""
    lines = page.read_text().splitlines()
    found: list[Block] = []
    i = 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if fence:
            end = i + 1
            closing = re.compile(rf"^{re.escape(fence[1][0])}{{{len(fence[1])},}}\s*$")
            while end < len(lines) and not closing.match(lines[end]):
                end += 1
            body = "\n".join(lines[i + 1:end]) + "\n"
            found.append(Block(page, i + 2, range(i, end + 1), True, tuple(fence[2].split()),
                               body))
            i = end + 1
        elif lines[i].startswith("    ") and (i == 0 or not lines[i - 1].strip()):
            end = i
            while end < len(lines) and (lines[end].startswith("    ") or not lines[end].strip()):
                end += 1
            body = "\n".join(line[4:] for line in lines[i:end]).strip("\n") + "\n"
            found.append(Block(page, i + 1, range(i, end), False, (), body))
            i = end
        else:
            i += 1
    return found


def steps(block: Block) -> list[Step]:
    """The commands of a shell block, with ``\\`` continuations and heredocs joined.

    In a transcript (a block with ``$ `` prompts) the lines without a prompt are the
    output of the command before them; elsewhere blank and comment lines are skipped.
    """
    lines = block.text.splitlines()
    transcript = any(line.startswith("$ ") for line in lines)
    found: list[Step] = []
    i = 0
    while i < len(lines):
        line, number = lines[i], block.line + i
        i += 1
        if transcript and not line.startswith("$ "):
            if found:
                found[-1].output.append(line)
            continue
        command = line.removeprefix("$ ") if transcript else line
        if not command.strip() or command.lstrip().startswith("#"):
            continue
        while command.endswith("\\") and i < len(lines):
            command = command[:-1] + lines[i].removeprefix("> ")
            i += 1
        heredoc = _HEREDOC.search(command)
        if heredoc:
            while i < len(lines):
                command += "\n" + lines[i]
                i += 1
                if lines[i - 1].strip() == heredoc[1]:
                    break
        found.append(Step(number, command))
    for step in found:
        while step.output and not step.output[-1].strip():
            step.output.pop()
    return found


def invocations(command: str) -> list[list[str]]:
    """The argument lists of the ``robot-daemon`` invocations of one shell command."""
    first_line = command.split("\n", 1)[0]  # a heredoc's body is not shell
    lexer = shlex.shlex(first_line, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    simple: list[list[str]] = [[]]
    words = iter(lexer)
    for word in words:
        if word in _SEPARATORS:
            simple.append([])
        elif word in _REDIRECTS:
            next(words, None)  # the redirection's target
        else:
            simple[-1].append(word)
    found = []
    for argv in simple:
        while argv and _ASSIGNMENT.match(argv[0]):
            argv = argv[1:]
        if not argv:
            continue
        if Path(argv[0]).name == "robot-daemon":
            found.append(argv[1:])
        elif _PYTHON.match(Path(argv[0]).name) and argv[1:3] == ["-m", "robot_daemon"]:
            found.append(argv[3:])
    return found


def parse_error(args: list[str]) -> str | None:
    """What the CLI's argument parser says about ``args``; ``None`` when it accepts them."""
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            build_parser().parse_args(args)
    except SystemExit as exc:  # argparse exits 2 on an error, 0 after --help or --version
        if exc.code:
            return err.getvalue().strip().splitlines()[-1]
    return None


def subcommands(parser: argparse.ArgumentParser, prefix: str = "") -> dict[str, Any]:
    """``{"run": <its parser>, "bag play": ..., ...}``: the leaves of the command tree."""
    found: dict[str, Any] = {}
    for action in parser._actions:  # argparse has no public accessor for subparsers
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found.update(subcommands(sub, f"{prefix}{name} ") or {prefix + name: sub})
    return found


def options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of ``parser`` (``--rate``, ``-h``, ...)."""
    return {s for action in parser._actions for s in action.option_strings}


def inline_spans(page: Path) -> Iterator[tuple[int, str]]:
    """``(line, text)`` of every inline code span outside the code blocks."""
    lines = page.read_text().splitlines()
    for block in blocks(page):
        for k in block.lines:
            if k < len(lines):
                lines[k] = ""
    prose = "\n".join(lines)
    for span in re.finditer(r"(?<!`)`([^`]+)`(?!`)", prose):
        yield prose.count("\n", 0, span.start()) + 1, " ".join(span[1].split())


def _pages() -> list[Any]:
    return [pytest.param(page, id=str(page.relative_to(ROOT))) for page in PAGES]


def _blocks_of_all_pages() -> list[Block]:
    return [block for page in PAGES for block in blocks(page)]


def _block_after(page: Path, pattern: str) -> tuple[re.Match[str], Block]:
    """The first match of ``pattern`` in ``page`` and the code block that follows it."""
    text = page.read_text()
    found = re.search(pattern, text)
    assert found, f"{page.relative_to(ROOT)}: no text matches {pattern!r}"
    line = text.count("\n", 0, found.start()) + 1
    return found, next(b for b in blocks(page) if b.line > line)


@pytest.mark.parametrize("page", _pages())
def test_every_fenced_block_says_what_it_is(page: Path) -> None:
    wrong = [
        f"{b.where}: info string {' '.join(b.info)!r}"
        for b in blocks(page)
        if b.info and (b.lang not in LANGUAGES
                       or not set(b.attributes) <= ATTRIBUTES.get(b.lang, set()))
    ] + [f"{b.where}: a fenced block needs an info string" for b in blocks(page)
         if b.fenced and not b.info]
    assert not wrong, (
        "tag every fenced block with one of " + ", ".join(sorted(LANGUAGES))
        + " (attributes: python notest, console run; see tests/test_docs.py):\n"
        + "\n".join(wrong)
    )


@pytest.mark.parametrize("page", _pages())
def test_every_robot_daemon_command_parses(page: Path) -> None:
    errors = []
    for block in blocks(page):
        if block.lang not in COMMANDS:
            continue
        for step in steps(block):
            where = f"{block.page.relative_to(ROOT)}:{step.line}"
            try:
                found = invocations(step.command)
            except ValueError as exc:  # shlex: an unbalanced quote
                errors.append(f"{where}: cannot split {step.command!r}: {exc}")
                continue
            for args in found:
                error = parse_error(args)
                if error:
                    errors.append(f"{where}: robot-daemon {shlex.join(args)}\n    {error}")
    assert not errors, "commands the CLI does not accept:\n" + "\n".join(errors)


@pytest.mark.parametrize("page", _pages())
def test_every_flag_of_an_inline_synopsis_exists(page: Path) -> None:
    commands = subcommands(build_parser())
    errors = []
    for line, span in inline_spans(page):
        words = span.split()
        starts = [i + 1 for i, w in enumerate(words) if Path(w).name == "robot-daemon"]
        start = starts[0] if starts else 0
        name = next((" ".join(words[start:start + n]) for n in (2, 1)
                     if " ".join(words[start:start + n]) in commands), None)
        if name is None:
            continue
        known = options(commands[name])
        for word in words[start + len(name.split()):]:
            flag = re.match(r"\[?(--[a-z0-9][a-z0-9-]*)", word)
            if flag and flag[1] not in known:
                errors.append(f"{page.relative_to(ROOT)}:{line}: `{span}`: {name} has no "
                              f"{flag[1]}")
    assert not errors, "flags the CLI does not have:\n" + "\n".join(errors)


def _run(where: str, argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    """Run one block or command; its stdout. Fails the test, naming ``where``, unless it
    exits 0 within ``BLOCK_TIMEOUT_S``."""
    proc = subprocess.Popen(argv, cwd=cwd, env=env, text=True, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=BLOCK_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the block's shell and what it started
        out, err = proc.communicate()
        pytest.fail(f"{where}: still running after {BLOCK_TIMEOUT_S} s (a command that "
                    f"waits for a peer or runs for minutes belongs in a `console` block)\n"
                    f"--- stdout\n{out}--- stderr\n{err}", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"{where}: exit status {proc.returncode}\n--- stdout\n{out}"
                    f"--- stderr\n{err}", pytrace=False)
    return out


def _bash(page: Path, first_line: int, script: str) -> list[str]:
    """``bash -euo pipefail`` running ``script``, whose first line is ``first_line`` of
    ``page``; a failing command is named on stderr by the page's line."""
    where = f"{page.relative_to(ROOT)}:$((LINENO + {first_line - 2}))"
    trap = f"trap 'echo \"{where}: exit status $?: $BASH_COMMAND\" >&2' ERR"
    return ["bash", "-euo", "pipefail", "-c", f"{trap}\n{script}"]


def _checkout(workdir: Path) -> dict[str, str]:
    """Make ``workdir`` look like a checkout; the environment the blocks run in."""
    (workdir / ".venv").symlink_to(sys.prefix)
    for name in CHECKOUT_LINKS:
        (workdir / name).symlink_to(ROOT / name)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env["HOME"] = str(workdir)
    env["PYTHONWARNINGS"] = "error"
    return env


@pytest.mark.parametrize("page", _pages())
def test_the_blocks_of_a_page_run_as_written(page: Path, workdir: Path) -> None:
    env = _checkout(workdir)
    for block in blocks(page):
        if block.lang == "sh":
            _run(block.where, _bash(page, block.line, block.text), workdir, env)
        elif block.lang == "python" and "notest" not in block.attributes:
            # Blank lines first, so that a traceback's line numbers are the page's.
            program = "\n" * (block.line - 1) + block.text
            _run(block.where, [sys.executable, "-c", program], workdir, env)
        elif block.lang == "console" and "run" in block.attributes:
            for step in steps(block):
                where = f"{page.relative_to(ROOT)}:{step.line}"
                out = _run(where, _bash(page, step.line, step.command), workdir, env)
                diff = "\n".join(difflib.unified_diff(
                    step.output, out.splitlines(), "shown", "printed", lineterm=""))
                assert not diff, f"{where}: the output differs from the page's\n{diff}"


def test_toml_blocks_are_valid_daemon_settings(workdir: Path) -> None:
    toml = [b for b in _blocks_of_all_pages() if b.lang == "toml"]
    assert toml, "no toml block found: the docs show the daemon's settings"
    for block in toml:
        path = workdir / "daemon.toml"
        path.write_text(block.text)
        try:
            config.load(path)
        except ConfigError as exc:
            pytest.fail(f"{block.where}: {exc}", pytrace=False)


def _cell_value(cell: str) -> Any:
    """A default of deploy.md's table: ``none``, a TOML value in backticks, or a path."""
    if cell == "none":
        return None
    text = cell.strip("`")
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def test_deploy_config_table_lists_every_setting_flag_and_default() -> None:
    text = (ROOT / "docs/daemon-reference.md").read_text()
    section = text.split("\n## The config file\n", 1)[1].split("\n## ", 1)[0]
    rows = {}  # key -> (flag cell, default cell)
    for line in section.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"`\w+`", cells[0]):
            rows[cells[0].strip("`")] = (cells[1], cells[2])
    defaults = {}
    for f in dataclasses.fields(config.DaemonConfig):
        value = f.default
        defaults[f.name] = (str(value) if isinstance(value, Path)
                            else list(value) if isinstance(value, tuple) else value)
    page = "docs/daemon-reference.md"
    assert set(rows) == set(defaults), f"{page}: the config table's keys"
    for key, (_, default) in rows.items():
        assert _cell_value(default) == defaults[key], f"{page}: the default of {key}"
    flags = {m[1] for cell, _ in rows.values() if (m := re.match(r"`(--[a-z-]+)", cell))}
    run = subcommands(build_parser())["run"]
    assert flags == options(run) - {"-h", "--help", "--config"}, f"{page}: run's flags"


def test_the_unit_runs_the_daemon_as_the_benchmarks_do() -> None:
    """deploy/robot-daemon.service's environment and nice value are the ones the benchmarks
    start the daemon with (``SERVING_ENV``, ``SERVING_NICE``): its figures are the unit's."""
    service: dict[str, str] = {}
    section = ""
    for line in (ROOT / "deploy/robot-daemon.service").read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            service[key] = value
    env = dict(pair.split("=", 1) for pair in service["Environment"].split())
    assert env == SERVING_ENV
    assert int(service["Nice"]) == SERVING_NICE
    assert int(service["CPUWeight"]) > 100  # the default: ahead of other services too


def test_protocol_byte_example_is_what_the_encoder_writes() -> None:
    claim, dump = _block_after(ROOT / "docs/protocol.md",
                               r"`(encode_frame\(.*\))` .* is these (\d+) bytes:")
    call = ast.parse(claim[1], mode="eval").body
    assert isinstance(call, ast.Call)
    kwargs = {k.arg: ast.literal_eval(k.value) for k in call.keywords if k.arg}
    shown = bytes.fromhex("".join(
        m[1] for line in dump.text.splitlines() if (m := re.match(r"((?:[0-9a-f]{2} )+)", line))
    ))
    payload = wire.encode_frame(**kwargs)
    assert len(payload) == int(claim[2]), f"{dump.where}: the byte count"
    assert shown == payload, f"{dump.where}: {payload.hex(' ')}"


def test_deploy_summary_line_is_what_the_daemon_logs() -> None:
    _, block = _block_after(ROOT / "docs/deploy.md", r"warnings more\):")
    shown = " ".join(block.text.split())
    status: defaultdict[str, Any] = defaultdict(int, frames_rejected={},
                                                model_version=shown.rsplit(" model ", 1)[1],
                                                health="ok", stale_endpoints=[], stale_srcs=[])
    logged = report.summary(status)

    def numbers_as_zero(line: str) -> str:
        return re.sub(r"\d+", "0", line)

    assert numbers_as_zero(shown) == numbers_as_zero(logged), f"{block.where}: {logged}"


#: The README is a landing page: what it is, the Quickstart, a tour, the API, the
#: commands, the conventions, where to go next. The rest lives in docs/.
README_MAX_WORDS = 1600


def test_the_readme_reads_in_five_minutes() -> None:
    words = len((ROOT / "README.md").read_text().split())
    assert words <= README_MAX_WORDS, f"README.md has {words} words: move detail into docs/"


def test_the_docs_index_links_every_page() -> None:
    index = (ROOT / "docs/README.md").read_text()
    linked = set(re.findall(r"\]\(([\w.-]+\.md)\)", index))
    pages = {p.name for p in (ROOT / "docs").glob("*.md")} - {"README.md"}
    assert pages <= linked, f"docs/README.md does not link {sorted(pages - linked)}"


def _help_texts(parser: argparse.ArgumentParser) -> Iterator[str]:
    """The --help of ``parser`` and of every command under it."""
    yield parser.format_help()
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _help_texts(sub)


def test_the_spec_parts_have_plain_names() -> None:
    """The reference network and schedule of docs/spec.md, not "the user's" (to the
    engineer reading, that reads as someone else's)."""
    texts = {str(p.relative_to(ROOT)): p.read_text() for p in [*PAGES, ROOT / "CONTRIBUTING.md"]}
    texts |= {f"--help {i}": text for i, text in enumerate(_help_texts(build_parser()))}
    said = [where for where, text in texts.items() if re.search(r"\buser's\b", text)]
    assert not said, f"'the user's' in {said}"
