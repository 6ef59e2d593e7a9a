"""A night's shard plan: which inputs each shard runs. Pure: the flow makes the plan, engines run it.

Like datatrove's ranks: shard k writes only its own `part-<k>` files (processors/sinks.py), so shards never
touch each other's files and a retried shard replaces exactly what its failed attempt may have written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass


def shard_name(index: int) -> str:
    """The shard's part-file suffix: part-00003.parquet."""
    return f"{index:05d}"


def automatic_shards(threads: int, n_files: int) -> int:
    """Shards when [engine] shards = 0: twice the cluster's threads (a slow shard does not hold up the
    night alone), but no more than there are input files, and at least one."""
    return max(1, min(2 * threads, n_files))


@dataclass(frozen=True)
class Shard:
    name: str  # part-<name>.parquet
    inputs: tuple[tuple[str, str], ...]  # (uri, source)
    unseen: frozenset[tuple[str, str]]  # (source, uri) with rows in this shard's files, not in the inbox now
    size: int  # estimated documents (flows.nightly.input_sizes: from file metadata)

    def describe(self, limit: int = 5) -> str:
        """The shard's inputs for an error message: the first few uris and how many more."""
        uris = [uri for uri, _ in self.inputs]
        more = f" and {len(uris) - limit} more" if len(uris) > limit else ""
        return f"shard {self.name} ({len(uris)} inputs: {', '.join(uris[:limit]) or 'none'}{more})"


def plan_shards(inputs: Iterable[tuple[str, str]], sizes: Mapping[str, int], n_shards: int,
                held_by: Mapping[str, str], unseen: Iterable[tuple[str, str]] = (),
                unseen_held_by: Mapping[tuple[str, str], str] | None = None) -> list[Shard]:
    """Splits a night's input files over shards 0..n_shards-1, balanced by size (estimated documents: the
    models' time goes per document, and a ticket export of a few KB holds more of them than a 150 KB PDF),
    largest first.

    held_by: input file uri -> the shard whose part files already hold its rows (an earlier run of the
        date). Such an input stays on that shard, whatever n_shards is now: its rows are replaced or kept
        there, never left behind in a part no shard rewrites, and never written twice.
    unseen / unseen_held_by: (source, uri) of rows whose input is not in the inbox now, and the shard
        holding them: that shard keeps them. A shard holding rows is in the plan even beyond n_shards.
    Every shard of the plan runs, even with no input: it rewrites (empties) what its part files held.
    """
    unseen_held_by = unseen_held_by or {}
    names = [shard_name(i) for i in range(max(1, n_shards))]
    assigned: dict[str, list[tuple[str, str]]] = {name: [] for name in names}
    load = dict.fromkeys(names, 0)
    unseen_of: dict[str, set[tuple[str, str]]] = {}
    for key in unseen:
        shard = unseen_held_by[key]
        unseen_of.setdefault(shard, set()).add(key)
        assigned.setdefault(shard, [])
        load.setdefault(shard, 0)
    free = []
    for uri, source in inputs:
        shard = held_by.get(uri)
        if shard is None:
            free.append((uri, source))
            continue
        assigned.setdefault(shard, []).append((uri, source))
        load[shard] = load.get(shard, 0) + sizes.get(uri, 0)
    # Largest first onto the least-loaded of the planned shards (ties: the lower name), so a rerun with the
    # same inputs makes the same plan.
    for uri, source in sorted(free, key=lambda item: (-sizes.get(item[0], 0), item[0])):
        shard = min(names, key=lambda name: (load[name], name))
        assigned[shard].append((uri, source))
        load[shard] += sizes.get(uri, 0)
    return [Shard(name, tuple(sorted(assigned[name])), frozenset(unseen_of.get(name, ())), load.get(name, 0))
            for name in sorted(assigned)]
