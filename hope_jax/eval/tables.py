"""lm-eval results -> the paper's LM/commonsense table (SPEC §5, §6.1), offline toy tasks, markdown.

Columns follow SPEC §5: Wiki ppl (word perplexity), LMB ppl, LMB acc, PIQA acc, Hella acc_norm,
Wino acc, ARC-e acc, ARC-c acc_norm, SIQA acc, BoolQ acc; Avg = mean of the 8 accuracy columns
(percent). lm-eval names SIQA `social_iqa`.
"""

from __future__ import annotations

import json
import os

PAPER_TASKS = ("wikitext", "lambada_openai", "piqa", "hellaswag", "winogrande", "arc_easy",
               "arc_challenge", "siqa", "boolq")
TASK_ALIASES = {"siqa": "social_iqa"}
# (column, lm-eval task, metric, is_accuracy)
PAPER_COLUMNS = (
    ("Wiki ppl", "wikitext", "word_perplexity", False),
    ("LMB ppl", "lambada_openai", "perplexity", False),
    ("LMB acc", "lambada_openai", "acc", True),
    ("PIQA acc", "piqa", "acc", True),
    ("Hella acc_n", "hellaswag", "acc_norm", True),
    ("Wino acc", "winogrande", "acc", True),
    ("ARC-e acc", "arc_easy", "acc", True),
    ("ARC-c acc_n", "arc_challenge", "acc_norm", True),
    ("SIQA acc", "social_iqa", "acc", True),
    ("BoolQ acc", "boolq", "acc", True),
)


def harness_task_names(tasks) -> list[str]:
    """Our task names (paper spelling) -> lm-eval task names."""
    return [TASK_ALIASES.get(t, t) for t in tasks]


def _metric(results: dict, task: str, metric: str):
    r = results.get(task, {})
    for key in (f"{metric},none", metric):
        if key in r:
            return float(r[key])
    return None


def paper_row(results: dict) -> dict:
    """One table row {column: value} from lm-eval's `results` dict (accuracies in percent).

    Columns whose task was not run are omitted; tasks outside the paper's set are added as
    `<task> <metric>` columns. `Avg` is present only when all 8 accuracy columns are.
    """
    row, accs, known = {}, [], set()
    for col, task, metric, is_acc in PAPER_COLUMNS:
        known.add(task)
        v = _metric(results, task, metric)
        if v is None:
            continue
        row[col] = 100.0 * v if is_acc else v
        if is_acc:
            accs.append(row[col])
    if len(accs) == sum(c[3] for c in PAPER_COLUMNS):
        row["Avg"] = sum(accs) / len(accs)
    for task, r in sorted(results.items()):
        if task in known:
            continue
        for key, v in sorted(r.items()):
            if isinstance(v, (int, float)) and "stderr" not in key and key != "alias":
                row[f"{task} {key.split(',')[0]}"] = float(v)
    return row


def markdown_table(rows: dict[str, dict], columns: list[str] | None = None) -> str:
    """Rows {name: {column: value}} as a markdown table (missing cells '-')."""
    if columns is None:
        columns = []
        for r in rows.values():
            columns += [c for c in r if c not in columns]
    lines = ["| model | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, r in rows.items():
        cells = [f"{r[c]:.2f}" if isinstance(r.get(c), float) else str(r.get(c, "-"))
                 for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


_YAML = {
    "toy_rolling": """task: toy_rolling
dataset_path: json
dataset_kwargs:
  data_files: {{test: {path}}}
output_type: loglikelihood_rolling
test_split: test
doc_to_text: ""
doc_to_target: "{{{{text}}}}"
metric_list:
  - metric: word_perplexity
  - metric: byte_perplexity
  - metric: bits_per_byte
""",
    "toy_lastword": """task: toy_lastword
dataset_path: json
dataset_kwargs:
  data_files: {{test: {path}}}
output_type: loglikelihood
test_split: test
doc_to_text: "{{{{text.split(' ')[:-1]|join(' ')}}}}"
doc_to_target: "{{{{' '+text.split(' ')[-1]}}}}"
metric_list:
  - metric: perplexity
    aggregation: perplexity
    higher_is_better: false
  - metric: acc
    aggregation: mean
    higher_is_better: true
""",
    "toy_choice": """task: toy_choice
dataset_path: json
dataset_kwargs:
  data_files: {{test: {path}}}
output_type: multiple_choice
test_split: test
doc_to_text: "{{{{context}}}}"
doc_to_target: label
doc_to_choice: "{{{{choices}}}}"
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
""",
}
TOY_TASKS = tuple(_YAML)


def write_toy_tasks(task_dir: str, texts: list[str], n: int = 16) -> list[str]:
    """Offline stand-ins for the harness tasks, built from `texts` (e.g. held-out corpus lines).

    toy_rolling = rolling perplexity of documents (wikitext-like); toy_lastword = predict the last
    word of a line (lambada-like, ppl + acc); toy_choice = pick the true next line among 4
    (other lines as distractors; acc / acc_norm). Returns the task names.
    """
    os.makedirs(task_dir, exist_ok=True)
    lines = [t.strip() for t in texts if len(t.strip().split(" ")) >= 3][: 4 * n + 8]
    if len(lines) < 8:
        raise ValueError("need at least 8 text lines with 3+ words to build the toy tasks")
    rows = {
        "toy_rolling": [{"text": "\n".join(lines[i:i + 4])}
                        for i in range(0, min(4 * n, len(lines)), 4)],
        "toy_lastword": [{"text": t} for t in lines[:n]],
        "toy_choice": [
            {"context": lines[i], "label": i % 4,
             "choices": [lines[i + 1] if j == i % 4 else lines[(i + 5 + 7 * j) % len(lines)]
                         for j in range(4)]}
            for i in range(min(n, len(lines) - 1))],
    }
    for name, docs in rows.items():
        path = os.path.abspath(os.path.join(task_dir, f"{name}.jsonl"))
        with open(path, "w") as f:
            f.writelines(json.dumps(d) + "\n" for d in docs)
        with open(os.path.join(task_dir, f"{name}.yaml"), "w") as f:
            f.write(_YAML[name].format(path=json.dumps(path)))
    return list(TOY_TASKS)
