#!/usr/bin/env python3
"""bench/peers.sh results.csv -> a markdown table per (workers, body, conns) block:
medians over runs, CPU microseconds per request, peak RSS, and the ratios that the
performance targets speak of: throughput against nginx, CPU per request against nginx
and against the yardstick forwarder (bench/yardstick)."""
import csv
import statistics
import sys


def median(values):
    return statistics.median(values) if values else float("nan")


def ratio(a, b):
    return f"{a / b:.2f}" if a == a and b == b and b else "-"


def main(path):
    blocks = {}
    for row in csv.DictReader(open(path)):
        key = (row["workers"], row["body"], row["conns"])
        blocks.setdefault(key, {}).setdefault(row["proxy"], []).append(row)
    print("# Benchmark summary\n")
    print("Medians over runs. CPU us/req = the proxy's CPU time (all threads) / requests served; "
          "RSS = peak VmHWM of the proxy's processes over the block.\n")
    for (workers, body, conns), proxies in blocks.items():
        print(f"## workers={workers} body={body} conns={conns}\n")
        print("| proxy | req/s [min-max] | p50 ms | p99 ms | errors | RSS MiB | CPU us/req "
              "| req/s vs nginx | CPU vs nginx | CPU vs yardstick |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        rps = {p: median([float(r["rps"]) for r in rows]) for p, rows in proxies.items()}
        cpu = {}
        for proxy, rows in proxies.items():
            if proxy == "direct":
                continue
            per = [float(r["proxy_cpu_s"]) * 1e6 / float(r["requests"])
                   for r in rows if float(r["requests"]) > 0]
            cpu[proxy] = median(per)
        for proxy, rows in proxies.items():
            all_rps = [float(r["rps"]) for r in rows]
            p50 = median([float(r["p50_ms"]) for r in rows if r["p50_ms"] not in ("", "NA")])
            p99 = median([float(r["p99_ms"]) for r in rows if r["p99_ms"] not in ("", "NA")])
            errors = sum(int(float(r["errors"] or 0)) for r in rows)
            mem = [int(r["proxy_hwm_kb"]) for r in rows if r["proxy_hwm_kb"]]
            rss = f"{max(mem) / 1024:.1f}" if mem else "-"
            c = cpu.get(proxy, float("nan"))
            shown = f"{c:.1f}" if c == c else "-"
            print(f"| {proxy} | {rps[proxy]:,.0f} [{min(all_rps):,.0f}-{max(all_rps):,.0f}] | {p50:.3f} | "
                  f"{p99:.3f} | {errors} | {rss} | {shown} | {ratio(rps[proxy], rps.get('nginx', float('nan')))} | "
                  f"{ratio(c, cpu.get('nginx', float('nan')))} | {ratio(c, cpu.get('yardstick', float('nan')))} |")
        print()


if __name__ == "__main__":
    main(sys.argv[1])
