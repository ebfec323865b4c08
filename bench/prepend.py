"""Puts a table at the top of BENCHMARKS.md's entries (newest first)."""
import sys

table = open(sys.argv[1]).read().strip("\n") + "\n\n"
text = open("BENCHMARKS.md").read()
at = text.find("\n## ")
text = text + "\n" + table if at < 0 else text[: at + 1] + table + text[at + 1 :]
open("BENCHMARKS.md", "w").write(text)
