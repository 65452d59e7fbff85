"""Resident memory of a process tree, read from /proc: what the benchmarks sample."""

from pathlib import Path


def descendants(pid: int) -> list[int]:
    """`pid` and every process below it."""
    pids = [pid]
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue
        for child in children:
            pids.extend(descendants(int(child)))
    return pids


def rss_bytes(pid: int) -> int:
    """A process's resident memory; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
