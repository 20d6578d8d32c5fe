"""The one table of commands that run on a memory another process may hold: the CLI hands them to the app that holds
the memory (vmem_core.cli.forward), and opens the memory read-only for those that only read.

Adding a command that works on a held memory: write its `cmd_*` function, give it a parser, and add one row here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from . import commands, curation


@dataclass(frozen=True)
class Forwarded:
    run: Callable[..., int]  # the command's function: parsed args -> exit status
    reads_only: bool  # opens the memory read-only; a read-only app serves it to other processes


# the reads first, in the order a refusal lists them
FORWARDED: dict[str, Forwarded] = {
    "stats": Forwarded(commands.cmd_stats, reads_only=True),
    "classify": Forwarded(commands.cmd_classify, reads_only=True),
    "eval": Forwarded(commands.cmd_eval, reads_only=True),
    "attribute": Forwarded(commands.cmd_attribute, reads_only=True),
    "search-text": Forwarded(commands.cmd_search_text, reads_only=True),
    "audit": Forwarded(commands.cmd_audit, reads_only=True),
    "ls": Forwarded(curation.cmd_ls, reads_only=True),
    "curate": Forwarded(curation.cmd_curate, reads_only=True),
    "map": Forwarded(curation.cmd_map, reads_only=True),
    "build": Forwarded(commands.cmd_build, reads_only=False),
    "add": Forwarded(commands.cmd_add, reads_only=False),
    "delete": Forwarded(commands.cmd_delete, reads_only=False),
    "restore": Forwarded(commands.cmd_restore, reads_only=False),
    "purge": Forwarded(commands.cmd_purge, reads_only=False),
    "tune": Forwarded(commands.cmd_tune, reads_only=False),
    "migrate": Forwarded(commands.cmd_migrate, reads_only=False),
    "relabel": Forwarded(curation.cmd_relabel, reads_only=False),
    "neighbour-table": Forwarded(curation.cmd_neighbours, reads_only=False),
}
HOSTABLE = tuple(FORWARDED)
READ_ONLY_COMMANDS = tuple(name for name, command in FORWARDED.items() if command.reads_only)
