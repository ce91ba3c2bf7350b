"""The storage role and reboots on a real Debian 12 VM with its own kernel and four virtio disks.

One VM boots for the whole module (lab.vm); between cases the data disks are reset inside the VM by
this file's own shell code, never by the role. Runs go through dlsetup's runner, except the interrupted
runs, which kill a plain ansible-playbook process group at chosen tasks.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import yaml
from rich.console import Console

from dlsetup.provisioning import REBOOT_TASK
from dlsetup.runner import RunOptions, RunResult, ansible_dir, link_collection, run_playbooks
from dlsetup.runner.progress import summary
from lab import vm as vm_lab

pytestmark = pytest.mark.vm

PLAYBOOKS = ansible_dir() / "playbooks"
#: Shell that frees the data disks: unmount, swapoff, deactivate LVM, stop md, wipe, forget fstab/mdadm.conf.
RESET = r"""
set -u
for m in $(findmnt -rn -o TARGET | grep -E '^/(data|backup|mnt/plant)' | sort -r); do umount "$m"; done
swapoff -a
vgchange -an >/dev/null 2>&1
for md in /dev/md?*; do [ -b "$md" ] && mdadm --stop "$md" >/dev/null 2>&1; done
# zero the whole (256 MiB) test disks: a filesystem inside an old array's data area survives wipefs
# of the members and would show through a new array of the same geometry
for d in $(readlink -f /dev/disk/by-id/virtio-dlsetup-d?); do
  wipefs -qa "$d"?* 2>/dev/null; dd if=/dev/zero of="$d" bs=4M status=none
done
sed -i '/ \/data /d' /etc/fstab; sed -i '/^ARRAY /d' /etc/mdadm/mdadm.conf
rm -f /run/dlsetup/reboot-required /etc/dlsetup/storage.json
udevadm settle
"""


@pytest.fixture(scope="module")
def vm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[vm_lab.VM]:
    with vm_lab.boot(tmp_path_factory.mktemp("vm")) as machine:
        yield machine


@pytest.fixture(scope="module")
def inventory(vm: vm_lab.VM, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("inventory") / "hosts.ini"
    path.write_text(vm.inventory(_host(vm)))
    return path


def _host(vm: vm_lab.VM) -> str:
    return f"vm-{vm.port}"  # a name of this VM only, so no cached facts of another run apply


def _layout(vm: vm_lab.VM, filesystem: str = "ext4", **extra: Any) -> dict:
    array = {"name": "data", "level": "raid10", "members": list(vm.by_id), "filesystem": filesystem,
             "mountpoint": "/data", "mount_options": ["defaults", "noatime", "nofail"]}
    return {"storage_arrays": [array], **extra}


def _run(vm: vm_lab.VM, inventory: Path, variables: dict, *names: str) -> RunResult:
    playbooks = [PLAYBOOKS / name for name in (names or ("storage.yml",))]
    return run_playbooks(playbooks, [str(inventory)], host_vars={_host(vm): variables}, hosts=[_host(vm)],
                         options=RunOptions(forks=1), reboot_task=REBOOT_TASK)


def _only(result: RunResult) -> Any:
    assert result.error is None, result.error
    (host,) = result.hosts
    return host


def _sha(vm: vm_lab.VM, paths: str) -> str:
    return vm.ssh(f"sha256sum {paths}").stdout


def _dlsetup(inventory: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``dlsetup provision -i inventory ARGS`` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "dlsetup", "provision", "-i", str(inventory), *args],
                          capture_output=True, text=True, timeout=900,
                          env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache"), "COLUMNS": "200"})


def test_raid10_converges_then_reboots_only_when_asked(vm: vm_lab.VM, inventory: Path, tmp_path: Path) -> None:
    """Converge, converge again with nothing changed, reboot with --reboot, data intact after it."""
    vm.ssh(RESET)
    every = ("storage.yml", "reboot.yml", "reboot_status.yml")
    first = _only(_run(vm, inventory, _layout(vm), *every))
    assert (first.status, first.failed, first.reboot_required) == ("changed", 0, True), first
    assert vm.ssh("cat /sys/block/md127/md/level; cat /sys/block/md127/md/raid_disks").stdout.split() == \
        ["raid10", "4"]
    assert vm.ssh("findmnt -n -o FSTYPE,OPTIONS /data").stdout.split()[0] == "ext4"
    assert "noatime" in vm.ssh("findmnt -n -o OPTIONS /data").stdout
    uuid = vm.ssh("blkid -s UUID -o value /dev/md/data").stdout.strip()
    assert f"UUID={uuid} /data ext4 defaults,noatime,nofail 0 0" in vm.ssh("cat /etc/fstab").stdout
    assert "ARRAY /dev/md/data metadata=1.2 UUID=" in vm.ssh("cat /etc/mdadm/mdadm.conf").stdout
    # dlsetup's record holds the array's md UUID: what makes it dlsetup's on the next plan and run
    md_uuid = vm.ssh("mdadm --detail --export /dev/md/data | sed -n 's/^MD_UUID=//p'").stdout.strip()
    (recorded,) = json.loads(vm.ssh("cat /etc/dlsetup/storage.json").stdout)["arrays"]
    assert (recorded["uuid"], recorded["level"], recorded["members"]) == (md_uuid.replace(":", ""), "raid10",
                                                                          list(vm.by_id))

    second_run = _run(vm, inventory, _layout(vm), *every)
    second = _only(second_run)
    assert (second.status, second.changed, second.reboot_required) == ("ok", 0, True), second
    console = Console(record=True, width=120)
    console.print(summary(second_run))
    (row,) = [line for line in console.export_text().splitlines() if _host(vm) in line]
    cells = [cell.strip() for cell in row.split("│") if cell.strip()]
    assert (cells[0], cells[-1]) == (_host(vm), "yes")  # the summary's reboot column, without --reboot

    vm.ssh("head -c 24M /dev/urandom > /data/weights.bin && seq 100000 > /data/ids.txt && sync")
    before = _sha(vm, "/data/weights.bin /data/ids.txt")
    boot = vm.boot_id()
    # the reboot as a user asks for it: dlsetup provision --reboot; the plan keeps the array dlsetup built
    run = _dlsetup(inventory, tmp_path, "--storage", f"/data:raid10:ext4:{','.join(vm.by_id)}", "--tags", "storage",
                   "--reboot", "--yes", "--json")
    assert run.returncode == 0, run.stderr[-3000:]
    (rebooted,) = [json.loads(line) for line in run.stdout.splitlines()]
    assert (rebooted["status"], rebooted["failed"], rebooted["reboot_required"]) == ("changed", 0, False), rebooted
    assert "DESTROY DATA" not in run.stderr
    assert vm.boot_id() not in (None, boot)
    assert vm.ssh("cat /sys/block/md127/md/array_state").stdout.strip() in ("clean", "active")
    assert vm.ssh("findmnt -n -o SOURCE /data").stdout.strip() in ("/dev/md127", "/dev/md/data")
    assert _sha(vm, "/data/weights.bin /data/ids.txt") == before

    # a member disk fails: dlsetup status finds the array degraded and names the command that fixes it, with
    # and without the layout (with it, the plan's verdict refuses dlsetup's degraded array: status reports
    # that as the array's drift, exit 1, and compares the rest with the plan of the repaired host)
    member = Path(vm.ssh(f"readlink -f {vm.by_id[0]}").stdout.strip()).name
    vm.ssh(f"mdadm /dev/md127 --fail /dev/{member} && udevadm settle")
    for layout in ((), ("--storage", f"/data:raid10:ext4:{','.join(vm.by_id)}")):
        drift = subprocess.run([sys.executable, "-m", "dlsetup", "status", "-i", str(inventory), "--offline", "--json",
                                *layout], capture_output=True, text=True, timeout=600,
                               env={**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")})
        assert drift.returncode == 1, drift.stdout[-3000:] + drift.stderr[-3000:]
        doc = json.loads(drift.stdout)[_host(vm)]
        items = {i["topic"]: i for i in doc["items"]}
        degraded = items["array md127"]
        assert not degraded["ok"] and "degraded" in degraded["found"] and f"faulty {member}" in degraded["found"], \
            degraded
        assert degraded["fix"].startswith(f"mdadm /dev/md127 --remove /dev/{member} && mdadm /dev/md127 --add "), \
            degraded
        if layout:
            assert items["array /data"]["ok"], items["array /data"]
            assert any("md127 (made by dlsetup for /data) is degraded" in note for note in doc["notes"]), doc["notes"]


#: plant name -> (shell leaving a file $M/f on something built on disk $D, reasons the role must name).
#: Every plant ends with the file's filesystem mounted at $M; "ext4" then unmounts it again.
PLANTS = {
    "ext4": ("mkfs.ext4 -q $D && mount $D $M && head -c 1M /dev/urandom > $M/f",
             ["holds a filesystem (ext4)"]),
    "lvm-pv": ("pvcreate -qq $D && vgcreate -qq plant $D && lvcreate -qq -y -L 32M -n lv plant && "
               "mkfs.ext4 -q /dev/plant/lv && mount /dev/plant/lv $M && head -c 1M /dev/urandom > $M/f",
               ["is an LVM physical volume", "is in use by dm-0", "is mounted at $M (dm-0)"]),
    "md-member": ("mdadm --create /dev/md/plant --run -q --level=1 --raid-devices=2 $D missing && "
                  "mkfs.ext4 -q /dev/md/plant && mount /dev/md/plant $M && head -c 1M /dev/urandom > $M/f",
                  ["carries an md RAID signature", "is in use by md127 (an md array not made by dlsetup)",
                   "is mounted at $M (md127)"]),
    "partition-table": ("echo 'label: gpt' | sfdisk -q $D && echo ',' | sfdisk -q --append $D && udevadm settle && "
                        "mkfs.ext4 -q ${D}1 && mount ${D}1 $M && head -c 1M /dev/urandom > $M/f",
                        ["has a gpt partition table", "has partitions $N1", "is mounted at $M ($N1)"]),
    "mounted-fs": ("mkfs.ext4 -q $D && mount $D $M && head -c 1M /dev/urandom > $M/f",
                   ["holds a filesystem (ext4)", "is mounted at $M ($N)"]),
    "swap": ("mkswap $D >/dev/null && swapon $D && mount -t tmpfs plant $M && "
             "dd if=$D bs=4096 count=1 status=none of=$M/f",
             ["is swap space", "is in use as swap"]),
}


def _plant(vm: vm_lab.VM, disk: str, plant: str, mountpoint: str) -> tuple[str, str]:
    """Plant ``plant`` on ``disk``: (the reasons the role must give, the checksum of the planted file)."""
    script, reasons = PLANTS[plant]
    device = vm.ssh(f"readlink -f {disk}").stdout.strip()
    values = {"$D": device, "$M": mountpoint, "$N": Path(device).name}
    checksum = vm.ssh(f"D={device} M={mountpoint} N={Path(device).name}; mkdir -p $M && {script} && "
                      f"sha256sum $M/f && udevadm settle").stdout
    if plant == "ext4":
        vm.ssh(f"umount {mountpoint} && udevadm settle")
    text = ", ".join(reasons)
    for key, value in sorted(values.items(), key=lambda kv: -len(kv[0])):
        text = text.replace(key, value)
    return text, checksum


def _checksum_after(vm: vm_lab.VM, disk: str, mountpoint: str) -> str:
    return vm.ssh(f"mountpoint -q {mountpoint} || mount -o ro $(readlink -f {disk}) {mountpoint}; "
                  f"sha256sum {mountpoint}/f").stdout


SAFE_MODE_TASK = "Inspect the member disks, refuse any that hold data (safe mode)"


def _refusal_message(disks: dict[str, str]) -> str:
    named = "; ".join(f"{disk}: {reasons}" for disk, reasons in disks.items())
    return f"storage: refusing the whole layout, nothing was written. {named}. Free"


def test_safe_mode_refuses_each_kind_of_used_disk_then_destroy_data_wipes(vm: vm_lab.VM, inventory: Path,
                                                                          tmp_path: Path) -> None:
    """Six kinds of used disk over two rounds (four disks a round), all refused and intact, by the role and
    by the plan; then `dlsetup provision --destroy-data` creates the layout."""
    d1, d2, d3, d4 = vm.by_id
    for plants in ({d1: "ext4", d2: "partition-table"},
                   {d1: "mounted-fs", d2: "swap", d3: "lvm-pv", d4: "md-member"}):
        vm.ssh(RESET)
        planted = {disk: _plant(vm, disk, plant, f"/mnt/plant{i}") for i, (disk, plant) in enumerate(plants.items())}
        host = _only(_run(vm, inventory, _layout(vm)))
        assert host.status == "failed" and host.failure is not None
        assert host.failure.task == SAFE_MODE_TASK
        assert _refusal_message({disk: reasons for disk, (reasons, _) in planted.items()}) in host.failure.message
        for i, (disk, (_, checksum)) in enumerate(planted.items()):
            assert _checksum_after(vm, disk, f"/mnt/plant{i}") == checksum
        free = " ".join(vm.ssh(f"readlink -f {d}").stdout.strip() for d in vm.by_id if d not in plants)
        if free:
            assert vm.ssh(f"wipefs --no-act {free}").stdout == ""  # nothing written to the free disks either
        assert "/data" not in vm.ssh("cat /etc/fstab").stdout

    # the same layout through the CLI: the plan, from the remote probe, refuses it before any run...
    storage = ["--storage", f"/data:raid10:ext4:{','.join(vm.by_id)}", "--tags", "storage", "--yes", "--json"]
    refused = _dlsetup(inventory, tmp_path, *storage)
    assert refused.returncode == 3, refused.stderr
    (summary_line,) = [json.loads(line) for line in refused.stdout.splitlines()]
    failure = summary_line["failure"]
    assert (summary_line["status"], summary_line["changed"], failure["task"]) == ("failed", 0, "dlsetup remote probe")
    assert failure["message"].startswith("no plan: storage: refusing the layout, these disks hold data: ")
    assert all(disk in failure["message"] for disk in vm.by_id), failure
    for i, (disk, (_, checksum)) in enumerate(planted.items()):
        assert _checksum_after(vm, disk, f"/mnt/plant{i}") == checksum
    # ...and --destroy-data creates it
    created_run = _dlsetup(inventory, tmp_path, *storage, "--destroy-data")
    assert created_run.returncode == 0, created_run.stderr[-3000:]
    assert "DESTROY DATA" in created_run.stderr
    (created,) = [json.loads(line) for line in created_run.stdout.splitlines()]
    assert (created["status"], created["failed"], created["roles"]) == (
        "changed", 0, ["common", "storage", "frameworks"]), created
    assert vm.ssh("cat /sys/block/md127/md/level").stdout.strip() == "raid10"
    assert vm.ssh("findmnt -n -o FSTYPE /data").stdout.strip() == "ext4"
    assert vm.ssh("cat /proc/swaps").stdout.count("\n") == 1


def test_a_mounted_array_someone_else_made_is_refused_then_wiped_only_as_planned(
        vm: vm_lab.VM, inventory: Path, tmp_path: Path) -> None:
    """Issue 2: an admin's md array over d1, d2 named "data" (md name "dlsetup-vm:data"), mounted at /backup.
    Refused without --destroy-data and by the role when the plan's lists are missing; with --destroy-data
    the plan lists both disks and the array, and the host wipes exactly those (d3 keeps its filesystem)."""
    d1, d2, d3, _ = vm.by_id
    vm.ssh(RESET)
    checksum = vm.ssh(
        f"mdadm --create /dev/md/data --run -q --level=1 --raid-devices=2 {d1} {d2} && "
        "mkfs.ext4 -q /dev/md/data && mkdir -p /backup && mount /dev/md/data /backup && "
        "head -c 1M /dev/urandom > /backup/f && sha256sum /backup/f && "
        f"mkfs.ext4 -q -L keep {d3} && udevadm settle").stdout
    assert vm.ssh("mdadm --detail --export /dev/md/data").stdout.count("MD_NAME=dlsetup-vm:data") == 1
    foreign = vm.ssh("mdadm --detail --export /dev/md/data | sed -n 's/^MD_UUID=//p'").stdout.strip()

    def untouched() -> None:
        assert vm.ssh("sha256sum /backup/f").stdout == checksum
        assert vm.ssh("findmnt -n -o SOURCE /backup").stdout.strip() in ("/dev/md127", "/dev/md/data")
        assert vm.ssh(f"blkid -s LABEL -o value {d3}").stdout.strip() == "keep"
        assert vm.ssh("test -e /etc/dlsetup/storage.json", check=False).returncode == 1

    storage = ["--storage", f"/data:raid1:ext4:{d1},{d2}", "--tags", "storage", "--yes", "--json"]
    refused = _dlsetup(inventory, tmp_path, *storage)
    assert refused.returncode == 3, refused.stderr[-3000:]
    (line,) = [json.loads(text) for text in refused.stdout.splitlines()]
    message = line["failure"]["message"]
    assert message.startswith("no plan: storage: refusing the layout, these disks hold data: "), message
    for disk in (d1, d2):
        assert f"{disk}: is a member of md array md127 (not made by dlsetup)" in message
        assert f"{disk}: is mounted at /backup (md127)" in message
    untouched()

    # the role with storage_destroy_data but without the plan's lists wipes nothing
    host = _only(_run(vm, inventory, {"storage_arrays": [{**_layout(vm)["storage_arrays"][0], "level": "raid1",
                                                          "members": [d1, d2]}],
                                      "storage_destroy_data": True}))
    assert host.status == "failed" and host.failure is not None and host.failure.task == SAFE_MODE_TASK
    assert "refusing to wipe what the plan did not list, nothing was written" in host.failure.message
    untouched()

    wiped = _dlsetup(inventory, tmp_path, *storage, "--destroy-data")
    assert wiped.returncode == 0, wiped.stderr[-3000:]
    said = " ".join(wiped.stderr.split())  # the DESTROY DATA lines, whatever the terminal wrapped
    assert f"{d1}: is mounted at /backup (md127) - wiped by --destroy-data" in said, said
    assert f"{d2}: is a member of md array md127 (not made by dlsetup) - wiped by --destroy-data" in said
    assert f"md array md127 (UUID {foreign}, not made by dlsetup, mounted at /backup): stopped" in said
    assert d3 not in said
    assert vm.ssh("findmnt -n /backup", check=False).stdout == ""
    assert vm.ssh("cat /sys/block/md127/md/level").stdout.strip() == "raid1"
    assert vm.ssh("findmnt -n -o FSTYPE /data").stdout.strip() == "ext4"
    assert vm.ssh("ls -A /data").stdout.split() == ["lost+found"]  # a new filesystem, not the old one
    assert vm.ssh(f"blkid -s LABEL -o value {d3}").stdout.strip() == "keep"
    (recorded,) = json.loads(vm.ssh("cat /etc/dlsetup/storage.json").stdout)["arrays"]
    created = vm.ssh("mdadm --detail --export /dev/md127 | sed -n 's/^MD_UUID=//p'").stdout.strip()
    assert recorded["uuid"] == created.replace(":", "") != foreign.replace(":", "")


def _ansible_playbook(vm: vm_lab.VM, inventory: Path, variables: Path) -> subprocess.Popen[str]:
    """A plain ansible-playbook run in its own process group, with no SSH master that would outlive it."""
    collections = link_collection(inventory.parent / "collections")  # the tree as dlsetup.workstation
    env = {**os.environ, "ANSIBLE_COLLECTIONS_PATH": str(collections), "ANSIBLE_SSH_ARGS": "-o ControlMaster=no",
           "ANSIBLE_NOCOLOR": "1", "ANSIBLE_PIPELINING": "True"}
    command = [str(Path(sys.executable).with_name("ansible-playbook")), "-i", str(inventory), "-e", f"@{variables}",
               str(PLAYBOOKS / "storage.yml")]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)


def _kill_at(process: subprocess.Popen[str], task: str, delay: float) -> str:
    """Kill the run's process group ``delay`` seconds after ``task`` starts; the output up to then."""
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        if f"TASK [dlsetup.workstation.storage : {task}]" in line:
            time.sleep(delay)
            os.killpg(process.pid, signal.SIGKILL)
            break
    process.wait()
    return "".join(seen)


def test_interrupted_runs_converge_next_time(vm: vm_lab.VM, inventory: Path, tmp_path: Path) -> None:
    """Killed at three points of one converge (apt, mdadm, mkfs), the next run converges; dpkg is consistent."""
    vm.ssh(RESET + "apt-get purge -qq -y xfsprogs >/dev/null 2>&1; true")  # so the role installs it
    variables = tmp_path / "layout.yml"
    variables.write_text(yaml.safe_dump(_layout(vm, "xfs")))
    for task, delay in (("Install mdadm and the mkfs tools", 5.0), ("Create the array on the checked disks", 0.5),
                        ("Create the filesystem", 1.0)):
        output = _kill_at(_ansible_playbook(vm, inventory, variables), task, delay)
        assert "PLAY RECAP" not in output, output[-3000:]
    rerun = _ansible_playbook(vm, inventory, variables)
    out, _ = rerun.communicate(timeout=900)
    assert rerun.returncode == 0, out[-3000:]
    assert vm.ssh("dpkg --audit").stdout == ""
    assert vm.ssh("findmnt -n -o FSTYPE /data").stdout.strip() == "xfs"
    assert vm.ssh("cat /sys/block/md127/md/raid_disks").stdout.strip() == "4"
