"""The documentation: a README read in minutes, and a site whose command-line reference is generated from the parser
and names every subcommand `vmem --help` lists, with its options."""

import importlib.util
import os
import re
import subprocess
import sys

import pytest
import yaml

from vmem_core.cli import build_parser

from .helpers import REPO, vmem

README_LIMIT = 12_000
SETUP_COMMANDS = ("pip install -r requirements.txt && vmem demo",
                  "pip install -r requirements-test.txt && python -m pytest")


def _hook():
    spec = importlib.util.spec_from_file_location("cli_reference", REPO / "docs" / "hooks" / "cli_reference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def listed_subcommands(help_text: str) -> list[str]:
    """The subcommands `vmem --help` lists: the names indented under COMMAND (continuation lines are indented more).

    >>> listed_subcommands("positional arguments:\\n  COMMAND\\n    build        create\\n                 more\\n"
    ...                    "    ls           list\\n\\noptions:\\n  -h, --help  show")
    ['build', 'ls']
    """
    section = help_text.split("positional arguments:", 1)[1].split("\noptions:", 1)[0]
    return re.findall(r"^    ([a-z][\w-]*)(?:\s|$)", section, flags=re.M)


def options_of(help_text: str) -> set[str]:
    """Every option string (-v, --k-max, ...) a help text names."""
    return set(re.findall(r"(?<![\w-])(--?[a-zA-Z][\w-]*)", help_text)) - {"-h", "--help"}


def sections(markdown: str) -> dict[str, str]:
    """`## vmem NAME` section of the reference -> its text."""
    parts = re.split(r"^## vmem ([\w-]+)\n", markdown, flags=re.M)
    return dict(zip(parts[1::2], parts[2::2]))


def test_the_site_reference_names_every_subcommand_and_its_options():
    listed = vmem("--help")
    assert listed.returncode == 0, listed.stderr
    names = listed_subcommands(listed.stdout)
    assert {"build", "classify", "relabel", "ls", "curate", "map", "demo"} <= set(names)  # the parse found them
    reference = sections(_hook().cli_reference())
    assert list(reference) == names  # every one, in `vmem --help`'s order, and no other
    parser = build_parser()
    for name in names:
        sub = parser._subparsers._group_actions[0].choices[name]
        wanted = options_of(sub.format_help())  # what `vmem NAME --help` prints
        missing = sorted(option for option in wanted if f"`{option}" not in reference[name]
                         and f", {option}" not in reference[name])
        assert not missing, f"vmem {name}: options missing from the site's reference: {missing}"
        usage = sub.format_usage().split(f"vmem {name}", 1)[1].split()[0]
        assert usage in reference[name]  # its usage line is there too


def test_a_subcommand_missing_from_the_reference_would_be_caught():
    reference = _hook().cli_reference().replace("## vmem curate\n", "## curate\n")
    assert "curate" not in sections(reference)


def test_the_site_builds_its_reference_from_the_parser():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())
    assert "docs/hooks/cli_reference.py" in config["hooks"]
    assert _hook().MARKER in (REPO / "docs" / "cli.md").read_text()
    text = (REPO / "docs" / "cli.md").read_text().replace(_hook().MARKER, "")
    assert "## vmem" not in text and "usage:" not in text  # no hand-copied help beside the generated one


def test_every_page_is_in_the_navigation():
    config = yaml.safe_load((REPO / "mkdocs.yml").read_text())

    def pages(entries):
        for entry in entries:
            if isinstance(entry, str):
                yield entry
            else:
                for value in entry.values():
                    yield from ([value] if isinstance(value, str) else pages(value))

    in_nav = set(pages(config["nav"]))
    on_disk = {p.relative_to(REPO / "docs").as_posix() for p in (REPO / "docs").rglob("*.md")}
    assert on_disk == in_nav


def test_the_readme_is_a_quickstart_with_the_set_up_commands():
    readme = (REPO / "README.md").read_text()
    assert len(readme) <= README_LIMIT, len(readme)
    for command in SETUP_COMMANDS:
        assert f"```bash\n{command}\n```" in readme
    for link in re.findall(r"\]\(((?:docs/)[^)#]+)", readme):  # its links into the site resolve
        assert (REPO / link).exists(), link


@pytest.mark.slow
def test_mkdocs_build_strict_passes_and_serves_the_reference(tmp_path):
    if importlib.util.find_spec("mkdocs") is None:
        if os.environ.get("CI"):
            pytest.fail("mkdocs is not installed but CI must build the site (pip install -r requirements-docs.txt)")
        pytest.skip("mkdocs not installed (pip install -r requirements-docs.txt)")
    site = tmp_path / "site"
    built = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                           capture_output=True, text=True, cwd=REPO, timeout=600,
                           env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert built.returncode == 0, built.stderr[-3000:]
    page = (site / "cli" / "index.html").read_text()
    for name in listed_subcommands(vmem("--help").stdout):
        assert f'id="vmem-{name}"' in page, name
    results = (site / "RESULTS" / "index.html").read_text()
    images = re.findall(r'<img[^>]+src="([^"]+)"', results)
    assert images and all((site / "RESULTS" / src).resolve().is_file() for src in images)
