"""Rich rendering of a HostProfile."""

from __future__ import annotations

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table

from dlsetup.model import HostProfile
from dlsetup.ui.format import UNKNOWN, size, val


def _kv(title: str, rows) -> Panel:
    table = Table.grid(padding=(0, 2))
    table.add_column(style="bold")
    table.add_column()
    for key, value in rows:
        table.add_row(key, value)
    return Panel(table, title=title, title_align="left", expand=False)


def render_profile(profile: HostProfile, console: Console) -> None:
    o, c, m, nv = profile.os, profile.cpu, profile.memory, profile.nvidia
    system = _kv(
        f"host {profile.hostname or '?'} ({profile.source})",
        [
            ("OS", val(o.pretty_name or (o.id and f"{o.id} {o.version_id or ''}"))),
            ("Kernel", f"{val(o.kernel)} {o.arch or ''}"),
            ("Secure Boot", o.secure_boot),
            ("Virtualization", val(o.virtualization) if o.virtualization else "none detected"),
        ],
    )
    avx = ", ".join(x for x, on in (("AVX2", c.avx2), ("AVX-512", c.avx512f), ("AMX", c.amx)) if on) or "none"
    cpu = _kv(
        "CPU",
        [
            ("Model", val(c.model)),
            ("Sockets / cores / threads", f"{val(c.sockets)} / {val(c.physical_cores)} / {val(c.logical_cpus)}"),
            ("Max clock", val(c.max_mhz, " MHz")),
            ("L2 / L3", f"{size(c.l2_cache_bytes)} / {size(c.l3_cache_bytes)}"),
            ("NUMA nodes", val(c.numa_nodes)),
            ("Vector", avx),
        ],
    )
    dimms = f", {m.dimm_count} DIMMs" if m.dimm_count else ""
    speed = f" @ {m.dimm_speed_mts} MT/s" if m.dimm_speed_mts else ""
    memory = _kv("Memory", [("Total", size(m.total_bytes) + dimms + speed), ("Available", size(m.available_bytes))])
    console.print(Group(system, cpu, memory))

    if not profile.gpus:
        console.print("[bold]GPUs[/]: none found")
    for g in profile.gpus:
        title = f"GPU {val(g.index)} · {g.name or 'unnamed'} ({g.vendor})"
        rows = [
            ("PCI", f"{g.pci_bus_id}  [{g.pci_vendor_id or '?'}:{g.pci_device_id or '?'}]"
                    + f"  driver {val(g.kernel_driver)}"),
            ("Architecture", val(g.architecture) + ("  (integrated)" if g.integrated else "")),
            ("Memory", size(g.memory_bytes)),
        ]
        if g.compute_capability or g.vendor == "nvidia":
            rows.append(("Compute capability", val(g.compute_capability)))
        if g.gfx_target or g.vendor == "amd":
            rows.append(("gfx target", val(g.gfx_target)))
        rows += [
            ("PCIe max / now", f"gen{val(g.pcie_gen_max)} x{val(g.pcie_width_max)} / "
                               f"gen{val(g.pcie_gen_current)} x{val(g.pcie_width_current)}"),
            ("Power limit", val(g.power_limit_w, " W")),
            ("ECC / MIG", f"{val(g.ecc_enabled)} / {val(g.mig_enabled)}"),
        ]
        if g.uuid:
            rows.append(("UUID", g.uuid))
        rows.append(("Sources", ", ".join(g.sources)))
        console.print(_kv(title, rows))
    if profile.nvidia_gpus or nv.kernel_module_loaded:
        state = f"kernel module {val(nv.kernel_module_version)} ({val(nv.kernel_module_flavor)}), " \
                f"library {val(nv.library_version)}, CUDA {val(nv.cuda_driver_version)}"
        if nv.reboot_required:
            state += "  [bold red]reboot required: module and library disagree[/]"
        console.print(f"[bold]NVIDIA driver[/]: {state}")
    if profile.amd_gpus:
        a = profile.amd
        console.print(f"[bold]AMD[/]: amdgpu {val(a.amdgpu_loaded)}, KFD {val(a.kfd_present)}, "
                      f"ROCm {val(a.rocm_version)}")

    devices = [d for d in profile.storage.devices if d.type != "loop" and d.size_bytes != 0]
    disks = Table(title="Storage", title_justify="left")
    for col in ("Device", "Media", "Size", "Model", "Holds"):
        disks.add_column(col)
    show_ids = any(d.by_id for d in devices)
    if show_ids:
        disks.add_column("by-id", overflow="fold")
    for d in devices:
        holds = ", ".join(x for x in (d.fstype, d.partition_table and f"{d.partition_table} table",
                                      d.md_member_of and f"member of {d.md_member_of}", *d.mountpoints) if x)
        row = [("└ " if d.parent else "") + d.name, d.media, size(d.size_bytes), d.model or "", holds]
        disks.add_row(*row, *([d.by_id or ""] if show_ids else []))
    console.print(disks)
    for array in profile.storage.arrays:
        health = "degraded" if array.degraded else "healthy" if array.degraded is False else UNKNOWN
        members = ", ".join(x.device for x in array.members)
        console.print(f"[bold]{array.name}[/]: {val(array.level)} {array.state}, {health}, members {members}")
    for mount in profile.storage.mounts:
        console.print(f"  {mount.mountpoint} ({val(mount.fstype)} on {mount.device}): "
                      f"{size(mount.free_bytes)} free of {size(mount.size_bytes)}")
    for note in profile.notes:
        console.print(f"[yellow]note[/]: {note}")
