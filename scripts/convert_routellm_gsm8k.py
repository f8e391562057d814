"""Convert RouteLLM's recorded GSM8K answers into the package's dataset format.

    python scripts/convert_routellm_gsm8k.py ../shared/data/routellm-gsm8k

Writes src/cascade_router/data/routellm_gsm8k.jsonl.gz (the 1,307 items left after RouteLLM's 12
contaminated prompts are dropped) and copies the Apache-2.0 license beside it. Token counts are
cl100k_base counts (bpe-openai, offline); every call's input also carries the 8-shot prefix the
answers were produced with (about 1,127 tokens, not stored in the source data).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import shutil
import statistics
from pathlib import Path

import bpe_openai

WEAK = "mistralai/Mixtral-8x7B-Instruct-v0.1"
STRONG = "gpt-4-1106-preview"
PREFIX_TOKENS = 1127
OUT = Path(__file__).resolve().parent.parent / "src" / "cascade_router" / "data"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source", type=Path)
    args = parser.parse_args()
    enc = bpe_openai.get_encoding("cl100k_base")
    contaminated = {
        json.loads(line)["eval_prompt"] for line in (args.source / "contaminated_prompts.jsonl").open()
    }
    references = {}
    for line in (args.source / "test.jsonl").open():
        item = json.loads(line)
        references[item["question"]] = item["answer"].split("####")[-1].strip()
    rows = list(csv.DictReader((args.source / "gsm8k_responses.csv").open(encoding="utf-8")))
    items = []
    for index, row in enumerate(rows):
        question = row["prompt"]
        if question in contaminated:
            continue
        q_tokens = len(enc.encode(question))
        answers = {}
        for model in (WEAK, STRONG):
            text = row[f"{model}_response"]
            answers[model] = {
                "text": text,
                "quality": 1.0 if row[model] == "True" else 0.0,
                "input_tokens": PREFIX_TOKENS + q_tokens,
                "output_tokens": len(enc.encode(text)),
            }
        items.append(
            {
                "id": f"gsm8k-test-{index:04d}",
                "request": question,
                "reference": references.get(question),
                "answers": answers,
            }
        )
    OUT.mkdir(parents=True, exist_ok=True)
    with gzip.open(OUT / "routellm_gsm8k.jsonl.gz", "wt", encoding="utf-8", compresslevel=9) as f:
        for item in items:
            f.write(json.dumps(item, ensure_ascii=False) + "\n")
    shutil.copyfile(args.source / "LICENSE", OUT / "LICENSE-routellm-gsm8k")
    weak = statistics.mean(i["answers"][WEAK]["quality"] for i in items)
    strong = statistics.mean(i["answers"][STRONG]["quality"] for i in items)
    q_len = statistics.mean(i["answers"][WEAK]["input_tokens"] - PREFIX_TOKENS for i in items)
    print(
        f"{len(items)} items; weak {weak:.1%} strong {strong:.1%}; question {q_len:.0f} tokens, answers "
        f"{statistics.mean(i['answers'][WEAK]['output_tokens'] for i in items):.0f} / "
        f"{statistics.mean(i['answers'][STRONG]['output_tokens'] for i in items):.0f} tokens"
    )


if __name__ == "__main__":
    main()
