# Where a fast path's instructions go, counted exactly: gdb single-steps the release-built
# kernel through a bench loop and prints one steady-state iteration instruction by instruction,
# then a count per function. The README's per-fast-path breakdowns come from this.
#
#   cargo run -- --bench --gdb --cmdline bench_only=slab &      # QEMU waits for gdb
#   TRACE_LOOP='kernel::bench::slab::steps::<kernel::bench::peers::Kmalloc>' \
#   TRACE_MARK='kernel::mm::slab::kfree' \
#       gdb -batch -x boot/fastpath_trace.py
#
# TRACE_LOOP: the function whose first call is stepped (its loop runs the measured operation);
# TRACE_MARK: a function entered once per iteration (the iteration is the instructions from one
# entry to the next); TRACE_STEPS: how many instructions to record (default 4000: the first
# iterations warm the caches up and are skipped); TRACE_SKIP_CALLS: calls of TRACE_LOOP to let
# pass first; KERNEL_ELF: defaults to the bench kernel.
# Single-stepping runs with interrupts masked (QEMU's default), so no timer tick lands inside.
# The loop's own instructions (index, store, branch) are in the count; the bench subtracts them.

import bisect
import os
import re
import subprocess

import gdb

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ELF = os.environ.get("KERNEL_ELF", os.path.join(ROOT, "target/bench-kernel/x86_64-unknown-none/release/kernel"))
OFFSET = int(os.environ.get("KERNEL_OFFSET", "0xffff800000000000"), 16)
LOOP = os.environ["TRACE_LOOP"]
MARK = os.environ["TRACE_MARK"]
STEPS = int(os.environ.get("TRACE_STEPS", "4000"))
# Calls of TRACE_LOOP to let pass first (e.g. 1 for the bench's second order).
SKIP = int(os.environ.get("TRACE_SKIP_CALLS", "0"))


def tool(name):
    sysroot = subprocess.run(["rustc", "--print", "sysroot"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    for dirpath, _, files in os.walk(os.path.join(sysroot, "lib/rustlib")):
        if name in files:
            return os.path.join(dirpath, name)
    raise SystemExit(f"{name} not found: rustup component add llvm-tools")


# Function symbols, sorted, for naming PCs; a generic's copies and codegen-unit duplicates all
# count as the same name.
nm = subprocess.run([tool("llvm-nm"), "-n", "-C", ELF], capture_output=True, text=True).stdout
syms = []
for line in nm.splitlines():
    m = re.match(r"^([0-9a-f]+) [tTwW] (.*)$", line)
    if m:
        syms.append((int(m.group(1), 16), m.group(2)))
addrs = [a for a, _ in syms]


def name_of(pc):
    i = bisect.bisect_right(addrs, pc) - 1
    return syms[i][1] if i >= 0 else "?"


def same(name, want):
    # LLVM's local copies carry a " (.llvm.NNN)" suffix.
    return name == want or name.startswith(want + " (.llvm.")


loops = [a for a, n in syms if same(n, LOOP)]
marks = {a for a, n in syms if same(n, MARK)}
if not loops or not marks:
    raise SystemExit(f"symbol not found: {LOOP if not loops else MARK}")

gdb.execute("set confirm off")
gdb.execute("set pagination off")
gdb.execute(f"add-symbol-file {ELF} -o {OFFSET:#x}", to_string=True)
gdb.execute("target remote :1234", to_string=True)
gdb.execute(f"hbreak *{loops[0] + OFFSET:#x}", to_string=True)
gdb.execute("continue", to_string=True)
for _ in range(SKIP):
    gdb.execute("continue", to_string=True)
gdb.execute("delete", to_string=True)
pcs = []
for _ in range(STEPS):
    pcs.append(int(gdb.parse_and_eval("$pc")) - OFFSET)
    gdb.execute("stepi", to_string=True)
gdb.execute("kill", to_string=True)

entries = [i for i, pc in enumerate(pcs) if pc in marks]
if len(entries) < 4:
    seen = sorted({name_of(pc) for pc in pcs[-500:]})
    raise SystemExit(
        f"{MARK} entered {len(entries)} times in {STEPS} steps: raise TRACE_STEPS, or mark one of the"
        " functions the last 500 steps ran:\n  " + "\n  ".join(seen)
    )
lengths = [b - a for a, b in zip(entries, entries[1:])]
# The last complete iteration: the warm-up is over by then.
start, end = entries[-2], entries[-1]
one = pcs[start:end]
print(f"iteration lengths: {lengths}")
print(f"one iteration ({len(one)} instructions), from {MARK}:")
lo, hi = min(one), max(one) + 16
dis = subprocess.run(
    [tool("llvm-objdump"), "-d", "--no-show-raw-insn", "-C", f"--start-address={lo:#x}", f"--stop-address={hi:#x}", ELF],
    capture_output=True,
    text=True,
).stdout
text = {}
for line in dis.splitlines():
    m = re.match(r"^\s*([0-9a-f]+):\s+(.*)$", line)
    if m:
        text[int(m.group(1), 16)] = re.sub(r"\s+", " ", m.group(2))
for pc in one:
    print(f"  {pc:8x}  {text.get(pc, '?')[:60]:60}  {name_of(pc)[:70]}")
print("per function, in order:")
runs = []
for pc in one:
    n = name_of(pc)
    if runs and runs[-1][0] == n:
        runs[-1][1] += 1
    else:
        runs.append([n, 1])
for n, c in runs:
    print(f"  {c:5}  {n[:110]}")
