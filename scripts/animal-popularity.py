"""Recomputes the `popularity` column of the animal prompt sets (configs/prompts/animals-*.csv).

Popularity is the Zipf frequency of the animal's English name in the `wordfreq` package's "best" English
word list: log10 of the name's occurrences per billion words, rounded to 2 decimals (wordfreq's own
rounding), offline and reproducible for a given wordfreq version. Every name is one word, so the value is
that word's frequency, not wordfreq's estimate for a phrase. The check that comes with it: every animal of
the common set has a higher popularity than every animal of the uncommon set.

wordfreq is not one of the worker's requirements; run this in a throwaway environment:

    python3 -m venv /tmp/wordfreq-venv
    /tmp/wordfreq-venv/bin/pip install wordfreq==3.1.1
    /tmp/wordfreq-venv/bin/python scripts/animal-popularity.py          # rewrites the column
    /tmp/wordfreq-venv/bin/python scripts/animal-popularity.py --check  # exit 1: a stale value or split
"""

from __future__ import annotations

import argparse
import csv
import io
import sys
from importlib.metadata import version
from pathlib import Path

WORDFREQ_VERSION = "3.1.1"
PROMPTS = Path(__file__).resolve().parents[1] / "configs" / "prompts"
SETS = {"common": PROMPTS / "animals-common.csv", "uncommon": PROMPTS / "animals-uncommon.csv"}


def popularity(name: str) -> str:
    from wordfreq import zipf_frequency

    return f"{zipf_frequency(name, 'en', wordlist='best'):.2f}"


def read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def render(columns: list[str], rows: list[dict[str, str]]) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a value is stale")
    args = parser.parse_args()
    found = version("wordfreq")
    if found != WORDFREQ_VERSION:
        print(
            f"warning: wordfreq {found}; the committed values come from {WORDFREQ_VERSION}", file=sys.stderr
        )
    stale: list[str] = []
    values: dict[str, list[tuple[float, str]]] = {}
    for group, path in SETS.items():
        columns, rows = read(path)
        for row in rows:
            value = popularity(row["animal"])
            if row["popularity"] != value:
                stale.append(f"{path.name}: {row['animal']}: {row['popularity'] or '(empty)'} -> {value}")
            row["popularity"] = value
        values[group] = sorted((float(row["popularity"]), row["animal"]) for row in rows)
        if not args.check:
            path.write_text(render(columns, rows), encoding="utf-8")
    least_common, most_uncommon = values["common"][0], values["uncommon"][-1]
    print(f"common: {len(values['common'])} animals, least popular {least_common[1]} {least_common[0]:.2f}")
    print(
        f"uncommon: {len(values['uncommon'])} animals, most popular {most_uncommon[1]} {most_uncommon[0]:.2f}"
    )
    split = least_common[0] > most_uncommon[0]
    if not split:
        print("error: a common animal is not more popular than every uncommon one", file=sys.stderr)
    for line in stale:
        print(("stale: " if args.check else "updated: ") + line)
    return 0 if split and not (args.check and stale) else 1


if __name__ == "__main__":
    sys.exit(main())
