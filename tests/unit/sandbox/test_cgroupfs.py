"""Finding cgroup hierarchies in mountinfo, and telling usable ones from unusable ones."""

from __future__ import annotations

from pathlib import Path

from faas.sandbox.cgroupfs import Mount, find_v1, find_v2, parse_mountinfo, read_keyed

MOUNTINFO = """\
22 28 0:20 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
30 22 0:26 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw,relatime shared:10 - cgroup2 cgroup2 rw
32 30 0:28 / /sys/fs/cgroup/cpu,cpuacct rw,relatime - cgroup cgroup rw,cpu,cpuacct
33 30 0:29 /docker/abc /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
34 30 0:30 / /sys/fs/cgroup/my\\040pids rw,relatime - cgroup cgroup rw,pids
"""


def test_parse_keeps_only_cgroup_mounts_with_their_controllers() -> None:
    mounts = parse_mountinfo(MOUNTINFO)
    assert [m.mount_point for m in mounts] == [
        "/sys/fs/cgroup/unified",
        "/sys/fs/cgroup/cpu,cpuacct",
        "/sys/fs/cgroup/memory",
        "/sys/fs/cgroup/my pids",  # \040 unescaped
    ]
    assert mounts[0].fstype == "cgroup2"
    assert {"cpu", "cpuacct"} <= mounts[1].options
    assert mounts[2].root == "/docker/abc"


def test_v1_needs_memory_and_cpu_and_takes_pids_if_there(tmp_path: Path) -> None:
    memory, cpu, pids = (tmp_path / name for name in ("memory", "cpu,cpuacct", "pids"))
    for path in (memory, cpu, pids):
        path.mkdir()
    mounts = [
        Mount("/", str(cpu), "cgroup", frozenset({"rw", "cpu", "cpuacct"})),
        Mount("/", str(memory), "cgroup", frozenset({"rw", "memory"})),
        Mount("/", str(pids), "cgroup", frozenset({"rw", "pids"})),
    ]
    found, reason = find_v1(mounts)
    assert reason == ""
    assert found is not None
    assert {c: m.mount_point for c, m in found.items()} == {
        "cpu": str(cpu),
        "memory": str(memory),
        "pids": str(pids),
    }
    # "cpuacct" alone must not pass for "cpu".
    found, reason = find_v1([Mount("/", str(cpu), "cgroup", frozenset({"cpuacct"})), mounts[1]])
    assert found is None
    assert "cpu" in reason


def test_v2_is_unusable_without_memory_and_cpu_enabled(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("cpu pids\n")
    mount = Mount("/", str(tmp_path), "cgroup2", frozenset({"rw"}))
    found, reason = find_v2([mount])
    assert found is None
    assert "memory" in reason
    (tmp_path / "cgroup.subtree_control").write_text("cpu memory pids\n")
    assert find_v2([mount]) == (mount, "")


def test_keyed_files_parse_to_counters(tmp_path: Path) -> None:
    path = tmp_path / "memory.oom_control"
    path.write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 3\n")
    assert read_keyed(path) == {"oom_kill_disable": 0, "under_oom": 0, "oom_kill": 3}
