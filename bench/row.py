"""One markdown table row from a moat-bench JSON line: row.py LABEL JSON."""
import json
import sys

r = json.loads(sys.argv[2])
rss = r.get("server_peak_rss_mb")
print(
    f"| {sys.argv[1]} | {r['throughput']:.0f} | {r['p50_us'] / 1000:.2f} | "
    f"{r['p99_us'] / 1000:.2f} | {r['p999_us'] / 1000:.2f} | {r['errors']} | "
    f"{'' if rss is None else f'{rss:.0f}'} |"
)
