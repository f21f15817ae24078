"""`python -m benchmarks` (`make bench`): run every benchmark and rewrite docs/BENCHMARKS.md.

    python -m benchmarks                       # all sections, writes docs/BENCHMARKS.md
    python -m benchmarks --only scoring serving  # those sections, printed, the page and plots left alone
    python -m benchmarks --quick               # small sizes: checks the scripts run, figures are rough

Sections run one after another in this process (the route-scaling one starts child processes to
measure their memory), each timing its own baseline beside its subject. Budget: under 15 minutes
on 2 CPU cores for the full run.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm

from benchmarks.report import REPO, Section, machine_description, render
from sdr_model.atomic_write import write_text_atomic

MODULES = (
    "route_throughput",
    "route_scaling",
    "scoring",
    "train_step",
    "upload",
    "serving",
    "service_route",
    "gpu_route",
)
PAGE = REPO / "docs" / "BENCHMARKS.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=MODULES, help="run these sections and print them")
    parser.add_argument("--quick", action="store_true", help="small sizes, for checking the scripts")
    parser.add_argument("--out", type=Path, default=None, help=f"write the page here (default: {PAGE} for a full run)")
    args = parser.parse_args(argv)
    names = args.only or list(MODULES)
    out = args.out or (None if args.only or args.quick else PAGE)
    machine, started = machine_description(), time.perf_counter()
    sections: list[Section] = []
    for name in (bar := tqdm(names, desc="benchmarks", unit="section")):
        bar.set_postfix_str(name)
        t0 = time.perf_counter()
        section = importlib.import_module(f"benchmarks.{name}").bench(args.quick)
        section.seconds = time.perf_counter() - t0
        sections.append(section)
        tqdm.write(section.markdown() + "\n")
    total = time.perf_counter() - started
    command = (
        "make bench"
        if not (args.only or args.quick)
        else "python -m " + " ".join(["benchmarks", *(argv or sys.argv[1:])])
    )
    page = render(sections, machine, command, total, ", ".join(f"{x:.1f}" for x in os.getloadavg()))
    if out is not None:
        for section in sections:
            for plot in section.plots:
                print(f"wrote {plot.save(out.parent)}")
        write_text_atomic(out, page)
        print(f"wrote {out} ({total / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
