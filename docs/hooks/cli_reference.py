"""mkdocs hook: the command-line reference, written at build time from vmem's own argparse parser.

`docs/cli.md` holds the marker below; this hook replaces it with one section per subcommand (its help, its usage and a
table of its arguments), read from `vmem_core.cli.build_parser()`. Nothing is copied by hand, so the reference cannot
drift from `vmem --help`; tests/test_docs.py checks that it names every subcommand and option.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

MARKER = "<!-- vmem-cli-reference -->"
USAGE_WIDTH = "80"  # argparse wraps usage at $COLUMNS: fixed, so the page is the same everywhere (and fits it)


def on_page_markdown(markdown: str, page, config, files) -> str:
    if MARKER not in markdown:
        return markdown
    return markdown.replace(MARKER, cli_reference())


def cli_reference() -> str:
    """The reference as Markdown: `## vmem NAME` per subcommand, in the order `vmem --help` lists them."""
    root = str(Path(__file__).resolve().parents[2])
    if root not in sys.path:  # a checkout without `pip install -e .`: the parser is imported from the tree itself
        sys.path.insert(0, root)
    from vmem_core.cli import build_parser

    previous = os.environ.get("COLUMNS")
    os.environ["COLUMNS"] = USAGE_WIDTH
    try:
        parser = build_parser()
        return render(parser)
    finally:
        if previous is None:
            os.environ.pop("COLUMNS", None)
        else:
            os.environ["COLUMNS"] = previous


def subcommands(parser: argparse.ArgumentParser) -> list[tuple[str, str, argparse.ArgumentParser]]:
    """(name, one-line help, parser) of each subcommand, in the parser's order."""
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
    return [(name, helps.get(name, ""), sub) for name, sub in action.choices.items()]


def render(parser: argparse.ArgumentParser) -> str:
    out = [_global_options(parser)]
    names = subcommands(parser)
    out.append("| command | what it does |\n|---|---|\n"
               + "\n".join(f"| [`vmem {name}`](#vmem-{name}) | {_cell(text)} |" for name, text, _ in names))
    for name, text, sub in names:
        out.append(f"## vmem {name}\n\n{_text(text)}.\n" if text else f"## vmem {name}\n")
        out.append(f"```text\n{sub.format_usage().strip()}\n```")
        for group in sub._action_groups:
            rows = [_row(sub, action) for action in group._group_actions if action.help != argparse.SUPPRESS
                    and not isinstance(action, argparse._HelpAction)]
            if not rows:
                continue
            title = {"positional arguments": "Arguments", "options": "Options"}.get(group.title, group.title)
            out.append(f"**{_text(title[0].upper() + title[1:])}**\n\n| argument | what it is | default |\n"
                       "|---|---|---|\n" + "\n".join(rows))
    return "\n\n".join(out) + "\n"


def _global_options(parser: argparse.ArgumentParser) -> str:
    rows = [_row(parser, a) for a in parser._actions
            if a.option_strings and not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]
    return ("Options before the command (`vmem -v COMMAND ...`):\n\n| argument | what it is | default |\n"
            "|---|---|---|\n" + "\n".join(rows))


def _row(parser: argparse.ArgumentParser, action: argparse.Action) -> str:
    if action.option_strings:
        names = ", ".join(action.option_strings)
        takes = action.nargs != 0
        shown = f"{names} {_metavar(action)}" if takes else names
    else:
        shown = _metavar(action)
    help_text = parser._get_formatter()._expand_help(action) if action.help else ""
    if not help_text and action.option_strings == ["--json"]:
        help_text = "print the result as JSON, its keys a contract: see the command line's JSON outputs"
    if action.choices is not None and not isinstance(action, argparse._SubParsersAction):
        help_text = (help_text + "; " if help_text else "") + "one of " + ", ".join(map(str, action.choices))
    return f"| `{_code(shown)}` | {_cell(help_text)} | {_cell(_default(action))} |"


def _metavar(action: argparse.Action) -> str:
    formatter = argparse.HelpFormatter("vmem")
    if action.option_strings:
        return formatter._format_args(action, action.dest.upper())
    return formatter._format_args(action, action.dest)


def _default(action: argparse.Action) -> str:
    if action.required and action.option_strings:
        return "required"
    value = action.default
    if value in (None, argparse.SUPPRESS) or isinstance(value, bool) or isinstance(action, argparse._AppendAction):
        return ""
    if isinstance(value, (list, tuple)):
        return "`" + " ".join(map(str, value)) + "`"
    return f"`{value}`"


def _text(text: str) -> str:
    """Plain text safe in Markdown: no raw HTML, no accidental emphasis."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("*", r"\*")


def _cell(text: str) -> str:
    return _text(" ".join(str(text).split())).replace("|", r"\|")


def _code(text: str) -> str:
    # Python-Markdown's tables do not split a row at a pipe inside a code span, and an escaped one would show its
    # backslash there; a backtick is what would end the span
    return text.replace("`", "'")
