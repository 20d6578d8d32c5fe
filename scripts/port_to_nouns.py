"""Rewrite calls of VisualMemory's old flat methods to its nouns (issue 23), for code written against the old API:

    python scripts/port_to_nouns.py FILE...      # rewrites in place, prints how many lines changed per file

memory.add(...) -> memory.exemplars.add(...); memory.exemplars(ids) -> memory.exemplars.rows(ids); memory.neighbors
-> memory.search.neighbors; memory.kept_ids -> memory.reliability.kept_ids; memory.neighbor_reliability ->
memory.reliability.of_neighbors; memory.index_backend -> memory.index.backend; memory.move_index -> memory.index.move;
memory.flush/devices/set_search_ef/index_params -> memory.index.*; memory.labels -> list(memory.table.labels);
memory.class_indices/label_of -> memory.table.*; memory.actor/acting_as -> memory.audit.*; audit_log/audit_head/
verify_audit -> memory.audit.log/head/verify. Only receivers named like a memory (memory, mem, reopened, viewer, ...)
are rewritten; `memory.search(...)`, `memory.reliability(...)`, `memory.classify(...)` and `memory.stats()` stay.
Running it twice changes nothing more.
"""
import pathlib
import re
import sys

# a receiver named like a memory, at the start of an expression (or after a \n or \t inside a code string)
R = (r"(?:(?<![\w.])|(?<=\\n)|(?<=\\t))"
     r"((?:self\.)?(?:memory|mem|reopened|viewer|created|second|intruder|held_memory|m|mem2|restored|filled|memory60|held))")
EX = ["add_embeddings", "add", "build", "plan_build", "delete", "restore", "relabel", "browse", "count", "label_changes",
      "thumbnails", "embeddings", "stored_embeddings", "tombstoned_ids", "near_duplicates_of", "load_images", "encode",
      "exclusive"]
subs = [(R + r"\.exemplars\(", r"\1.exemplars.rows(")]
subs += [(R + rf"\.{n}\(", rf"\1.exemplars.{n}(") for n in EX]
subs += [(R + rf"\.{n}\(", rf"\1.search.{n}(") for n in ["neighbors", "memory_neighbors", "vote", "classify_embeddings"]]
subs += [(R + r"\.kept_ids\(", r"\1.reliability.kept_ids("), (R + r"\.neighbor_reliability\(", r"\1.reliability.of_neighbors(")]
subs += [(R + r"\.index_backend\b", r"\1.index.backend"), (R + r"\.move_index\(", r"\1.index.move("),
         (R + r"\.set_search_ef\(", r"\1.index.set_search_ef("), (R + r"\.flush\(", r"\1.index.flush("),
         (R + r"\.devices\(", r"\1.index.devices("), (R + r"\.index_params\b", r"\1.index.params")]
subs += [(R + r"\.audit_log\(\)", r"\1.audit.log()"), (R + r"\.audit_head\(\)", r"\1.audit.head()"),
         (R + r"\.verify_audit\(\)", r"\1.audit.verify()")]
subs += [(R + r"\.labels\b(?!\s*=[^=])", r"list(\1.table.labels)"),
         (R + r"\.class_indices\(", r"\1.table.class_indices("),
         (R + r"\.label_of\(", r"\1.table.label_of("), (R + r"\.actor\b", r"\1.audit.actor"),
         (R + r"\.acting_as\(", r"\1.audit.acting_as(")]

changed = {}
for path in sys.argv[1:]:
    p = pathlib.Path(path)
    s = p.read_text()
    new = s
    for a, b in subs:
        new = re.sub(a, b, new)
    if new != s:
        p.write_text(new)
        changed[path] = sum(1 for x, y in zip(s.splitlines(), new.splitlines()) if x != y)
for k, v in changed.items():
    print(v, k)
