#!/usr/bin/env python3
"""Sum cubecl's per-kernel profile log (`| 1.2ms | Name_hash`) by kernel family.

Usage: profile_summary.py profile.log [--top N]. Flick's own WGSL kernels keep one row each
(named by cubecl's hash of the kernel; the order of launches in the log tells which is which). The log comes from a `cubecl.toml` with
`[profiling.logger] level = "basic"` in the working directory of a wgpu run (each kernel then
runs alone, timed on the device: the totals are device times, the run itself is slower).
"""
import re, sys, collections

def parse_duration(s):
    m = re.match(r"([0-9.]+)\s*(ns|µs|us|ms|s)$", s.strip())
    if not m:
        return None
    v, u = float(m.group(1)), m.group(2)
    return v * {"ns": 1e-9, "µs": 1e-6, "us": 1e-6, "ms": 1e-3, "s": 1.0}[u]

def family(name):
    name = name.strip()
    # Flick's WGSL kernels: one row per kernel (its hash names it: "SourceKernel | Wgsl_46c49a14")
    if name.startswith("SourceKernel"):
        return name
    # strip the per-instantiation hashes cubecl appends (`_734e5ed5`)
    name = re.sub(r"_[0-9a-f]{8}\b", "", name)
    # cubecl's matmuls carry their whole type in the name: keep the arguments and the algorithm
    parts = [p.strip() for p in name.split("|")]
    if parts[0] == "MatmulEntry":
        algo = next((p for p in parts if p.endswith("MatmulFamily")), "")
        return " | ".join(x for x in ["MatmulEntry", parts[1] if len(parts) > 1 else "", algo] if x)
    return name

def main():
    path = sys.argv[1]
    top = int(sys.argv[sys.argv.index("--top") + 1]) if "--top" in sys.argv else 25
    tot, cnt = collections.Counter(), collections.Counter()
    for line in open(path, errors="replace"):
        parts = line.rstrip("\n").split("|")
        if len(parts) < 3 or parts[0].strip():
            continue
        d = parse_duration(parts[1])
        if d is None:
            continue
        name = family("|".join(parts[2:]))
        tot[name] += d
        cnt[name] += 1
    all_t = sum(tot.values())
    if all_t == 0:
        sys.exit("no timed kernels in " + path)
    print(f"| kernel | launches | device ms | share |\n|---|---|---|---|")
    for name, t in tot.most_common(top):
        print(f"| {name} | {cnt[name]} | {t*1e3:.2f} | {100*t/all_t:.1f} % |")
    print(f"| all ({len(tot)} families) | {sum(cnt.values())} | {all_t*1e3:.2f} | 100 % |")

main()
