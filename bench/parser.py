"""Parser throughput on one core: a mixed corpus of what people text, in three languages."""

from __future__ import annotations

import json
import time
import tomllib
from pathlib import Path

from keywords.parser import SenderContext, lexicon, parse

ROOT = Path(__file__).resolve().parent.parent


def mixed_corpus() -> list[tuple[str, SenderContext]]:
    out = []
    for path in sorted((ROOT / "tests" / "keywords" / "tables").glob("*.toml")):
        for case in tomllib.loads(path.read_text(encoding="utf-8"))["case"]:
            out.append(
                (
                    case["text"],
                    SenderContext(role=case.get("role"), checkin_pending=case.get("pending", False)),
                )
            )
    for line in (ROOT / "tests" / "corpus" / "messages.jsonl").read_text().splitlines():
        if line.strip():
            out.append((json.loads(line)["text"], SenderContext(role="focal_point")))
    return out


def main(seconds: float = 3.0) -> dict[str, float]:
    lex = lexicon()
    corpus = mixed_corpus()
    for text, context in corpus:  # warm caches
        parse(text, context, lex=lex)
    n = 0
    samples: list[float] = []
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    while time.perf_counter() < deadline:
        for text, context in corpus:
            t0 = time.perf_counter()
            parse(text, context, lex=lex)
            samples.append(time.perf_counter() - t0)
        n += len(corpus)
    elapsed = time.perf_counter() - started
    samples.sort()
    rate = n / elapsed
    p50, p99 = samples[len(samples) // 2] * 1e6, samples[int(len(samples) * 0.99)] * 1e6
    print(f"parser: {len(corpus)} distinct messages (en, fr, sw, corpus), one core, {seconds:.0f} s")
    print(f"  {rate:,.0f} messages/s   p50 {p50:.1f} µs   p99 {p99:.1f} µs   (target: 20,000 messages/s)")
    return {"rate": rate, "p50_us": p50, "p99_us": p99}


if __name__ == "__main__":
    main()
