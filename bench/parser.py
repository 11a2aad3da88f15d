"""Parser throughput on one core: a mixed corpus of what people text, in three languages."""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path

from bench.common import expect, percentile
from keywords.parser import SenderContext, lexicon, parse

ROOT = Path(__file__).resolve().parent.parent


def mixed_corpus() -> list[tuple[str, SenderContext, str | None]]:
    """Every text of the parser's tables and of the corpus, with its context and expected intent."""
    out: list[tuple[str, SenderContext, str | None]] = []
    for path in sorted((ROOT / "tests" / "keywords" / "tables").glob("*.toml")):
        for case in tomllib.loads(path.read_text(encoding="utf-8"))["case"]:
            context = SenderContext(role=case.get("role"), checkin_pending=case.get("pending", False))
            out.append((case["text"], context, case["intent"]))
    for line in (ROOT / "tests" / "corpus" / "messages.jsonl").read_text().splitlines():
        if line.strip():
            case = json.loads(line)
            out.append((case["text"], SenderContext(role="focal_point"), case["expect"].get("intent")))
    return out


def main(seconds: float = 3.0) -> dict[str, float]:
    lex = lexicon()
    corpus = mixed_corpus()
    expect(len(corpus) > 100, f"the corpus has only {len(corpus)} messages")
    # Warm the caches, and make sure what is timed is a parser that works: a parser that reads
    # everything as `unknown` would be fast and worthless.
    parsed = [(parse(text, context, lex=lex).intent, intent) for text, context, intent in corpus]
    known = [(got, wanted) for got, wanted in parsed if wanted is not None]
    agree = sum(got == wanted for got, wanted in known)
    expect(agree >= 0.9 * len(known), f"only {agree} of {len(known)} messages parse to their intent")
    n = 0
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        for text, context, _ in corpus:
            t0 = time.perf_counter()
            parse(text, context, lex=lex)
            samples.append(time.perf_counter() - t0)
        n += len(corpus)
    elapsed = time.perf_counter() - started
    rate = n / elapsed
    p50, p99 = percentile(samples, 50) * 1e6, percentile(samples, 99) * 1e6
    tables = ", ".join(sorted(p.stem for p in (ROOT / "tests" / "keywords" / "tables").glob("*.toml")))
    print(f"parser: {len(corpus)} distinct messages ({tables}, corpus), one core, {seconds:g} s")
    print(f"  {rate:,.0f} messages/s   p50 {p50:.1f} µs   p99 {p99:.1f} µs   (target: 20,000 messages/s)")
    return {"rate": rate, "p50_us": p50, "p99_us": p99, "agree": agree / len(known)}


def smoke() -> dict[str, float]:
    return main(seconds=0.3)


if __name__ == "__main__":
    main()
