"""Break the code on purpose and check that a test notices: the breaks a review once found unnoticed.

Each break below replaces one piece of bstune's code, runs the tests named for it, expects at
least one of them to fail, and puts the code back. A break finds its code by its tokens, not its
text, so a reformat of the code (other line breaks, spaces, indentation) does not defeat it;
``--check`` applies every break to the code as it is and reformatted, without running tests. Not collected by pytest (slow: it runs the
named tests once per break); run it after changing a test that guards one of these:

    python tests/breaks.py            # every break
    python tests/breaks.py spaces     # the breaks whose name contains "spaces"
    python tests/breaks.py --check    # every break applies (to the code as is and reformatted)

It prints one line per break (caught or MISSED) and exits 1 if any was missed. It edits the
working tree while it runs: commit nothing until it has finished. Stopped by SIGTERM (``timeout``)
or Ctrl-C, it puts the code back first.
"""

from __future__ import annotations

import ast
import io
import signal
import subprocess
import sys
import tempfile
import textwrap
import tokenize
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Break:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]


BREAKS = [
    Break(
        "a worker's trial is created without the process that runs it",
        "bstune/storage.py",
        "if template_trial is None and self.trial_attrs:",
        "if False:",
        ("tests/test_storage.py::test_the_process_comes_with_every_trial_it_creates_or_takes_from_the_queue",),
    ),
    Break(
        "a worker's late storage lines say the outage again",
        "bstune/storage.py",
        "                if at <= self.back_at:\n",
        "                if False:\n",
        ("tests/test_storage.py::test_one_outage_is_said_once_when_a_workers_lines_come_late",),
    ),
    Break(
        "a lost storage connection is not waited out",
        "bstune/storage.py",
        "if not self.retry or not is_connection_lost(e):",
        "if True:",
        ("tests/test_storage.py::test_calls_wait_out_a_database_restart_and_the_reports_are_kept",
         "tests/test_chaos.py::test_a_study_rides_out_killed_workers_a_database_crash_and_a_killed_command"),
    ),
    Break(
        "after an outage every running trial is taken for a dead one",
        "bstune/storage.py",
        "        if not stale or interval is None:\n",
        "        if True:\n",
        ("tests/test_storage.py::test_after_an_outage_a_live_trial_is_not_taken_for_a_dead_one",),
    ),
    Break(
        "a target study's per-trial limit stops nothing",
        "bstune/objectives.py",
        '        """The most seconds a trial trains (``None``: until the target or the end of its epochs)."""\n        return self.limit\n',
        '        """The most seconds a trial trains (``None``: until the target or the end of its epochs)."""\n        return None\n',
        ("tests/test_run.py::test_a_target_with_a_limit_stops_a_trial_there_as_a_miss_and_ends_its_schedule_there",),
    ),
    Break(
        "the pruners do not read a target study's limit",
        "bstune/pruners/_base.py",
        "    return None if mode is None else mode.trial_limit\n",
        '    return None if mode is None or mode.kind == "target" else mode.trial_limit\n',
        ("tests/test_halving.py::test_a_target_study_with_a_limit_ranks_at_fractions_of_the_limit_from_the_start",),
    ),
    Break(
        "the default pruning of a target study with a limit ranks at a quarter of the limit",
        "bstune/pruners/_factory.py",
        "        return AnyPruner(DivergencePruner(), TargetTimePruner(), GainBoundPruner())\n",
        "        return AnyPruner(DivergencePruner(), TargetTimePruner(), GainBoundPruner(), AsyncHalvingPruner(n_rungs=1))\n",
        ("tests/test_cli.py::test_target_with_a_time_budget_limits_each_trial",),
    ),
    Break(
        "the time-budget default ranks at a quarter of the budget after the sweep (the old default)",
        "bstune/pruners/_factory.py",
        "    return AnyPruner(DivergencePruner(), SlowTrialPruner(), GainBoundPruner())\n",
        "    return AnyPruner(DivergencePruner(), SlowTrialPruner(), GainBoundPruner(), AsyncHalvingPruner(n_rungs=1))\n",
        ("tests/test_halving.py::test_a_rung_that_always_ranks_stops_a_slow_starting_best_configuration_the_default_keeps",),
    ),
    Break(
        "the time-budget default ranks at a quarter where the study's early values rank final ones",
        "bstune/pruners/_factory.py",
        "    return AnyPruner(DivergencePruner(), SlowTrialPruner(), GainBoundPruner())\n",
        "    return AnyPruner(DivergencePruner(), SlowTrialPruner(), GainBoundPruner(), AsyncHalvingPruner(n_rungs=1, min_rank_correlation=0.8))\n",
        ("tests/test_pruners.py::test_make_pruner_default_follows_the_mode",),
    ),
    Break(
        "a halving rung with skip_sweep ranks the start-up sweep's trials too",
        "bstune/pruners/_halving.py",
        '        if self.skip_sweep and trial.number < getattr(study.sampler, "n_sweep", 0):\n',
        '        if False:\n',
        ("tests/test_halving.py::test_a_rung_with_skip_sweep_leaves_the_start_up_sweep_to_train",),
    ),
    Break(
        "the async-halving pruner ignores its rank check",
        "bstune/pruners/_halving.py",
        "        if self.min_rank_correlation is not None and not (\n",
        "        if False and not (\n",
        ("tests/test_halving.py::test_with_a_rank_check_a_rung_ranks_only_where_the_study_shows_early_values_rank_final_ones",),
    ),
    Break(
        "the trainer reads the clock only at its planned checks (a busy machine overshoots the budget)",
        "bstune/train.py",
        "if unchecked <= 0 or samples >= eval_at or run.elapsed >= stop_at:",
        "if unchecked <= 0 or samples >= eval_at:",
        ("tests/test_train.py::test_a_trial_ends_within_one_step_of_its_budget_when_steps_slow_down",),
    ),
    Break(
        "make_pruner returns NopPruner for every name but default",
        "bstune/pruners/_factory.py",
        "    return PRUNERS[name](mode)\n",
        '    return PRUNERS[name](mode) if name == "default" else optuna.pruners.NopPruner()\n',
        ("tests/test_pruners.py::test_make_pruner_knows_every_name_and_picks_a_default_per_mode",),
    ),
    Break(
        "bstune optimize ignores --pruner",
        "bstune/tuning.py",
        "pruner=make_pruner(opts.pruner, mode))",
        'pruner=make_pruner("default", mode))',
        ("tests/test_cli_pruners.py::test_cli_optimize_with_a_pruner",),
    ),
    Break(
        "the time-aligned pruner never prunes",
        "bstune/pruners/_time_aligned.py",
        "        pts = points(trial)\n",
        "        return None\n        pts = points(trial)\n",
        ("tests/test_pruners.py::test_two_threads_share_one_pruner", "tests/test_pruners.py::test_no_pruning_without_data"),
    ),
    Break(
        "the async-halving pruner keeps the top quarter of a minimised value from the wrong end",
        "bstune/pruners/_halving.py",
        "        if direction == StudyDirection.MINIMIZE:\n            q = 1.0 - q\n",
        "",
        ("tests/test_halving.py",),
    ),
    Break(
        "the async-halving pruner judges a late first report at the earliest rung",
        "bstune/pruners/_halving.py",
        "        rung = max(passed)\n",
        "        rung = min(passed)\n",
        ("tests/test_halving.py",),
    ),
    Break(
        "the async-halving pruner takes max_t from pruned trials too",
        "bstune/pruners/_halving.py",
        "        for t in trials(study, (TrialState.COMPLETE,)):\n            if t.number not in seen",
        "        for t in trials(study, (TrialState.COMPLETE, TrialState.PRUNED)):\n            if t.number not in seen",
        ("tests/test_halving.py",),
    ),
    Break(
        "narrow_space keeps every batch size",
        "bstune/probe/_narrow.py",
        "        batch_low=low,\n        batch_high=high,\n",
        "        batch_low=base.batch_low,\n        batch_high=base.batch_high,\n",
        ("tests/test_probe.py::test_narrowed_space_follows_the_measurements", "tests/test_probe.py::test_narrow_space_rules"),
    ),
    Break(
        "the best-configurations table keeps infeasible trials",
        "bstune/analysis/_summary.py",
        "    rows = [r for r in rows if r.feasible]\n",
        "",
        ("tests/analysis/test_summary.py",),
    ),
    Break(
        "the best-configurations table is sorted worst first",
        "bstune/analysis/_summary.py",
        "reverse=maximize)",
        "reverse=not maximize)",
        ("tests/analysis/test_summary.py",),
    ),
    Break(
        "bstune spaces prints nothing",
        "bstune/cli.py",
        '        typer.echo(f"{name:16} {s.description}")\n',
        "        pass\n",
        ("tests/test_cli.py::test_spaces_lists_every_built_in_space_with_its_description",),
    ),
    Break(
        "the command line's options do not reach tune()",
        "bstune/options.py",
        "            parsed[f.name] = parse(value) if parse is not None and value is not None else value\n",
        "            parsed[f.name] = f.default\n",
        ("tests/test_cli.py::test_seed_timeout_clock_and_micro_batch_options_take_effect",),
    ),
    Break(
        "--seed is ignored",
        "bstune/tuning.py",
        "_loaded_trainer(console, task, device=opts.device, seed=opts.seed,",
        "_loaded_trainer(console, task, device=opts.device, seed=0,",
        ("tests/test_cli.py::test_seed_timeout_clock_and_micro_batch_options_take_effect",),
    ),
    Break(
        "--timeout is ignored",
        "bstune/tuning.py",
        "job.objective, n_trials=n_trials, timeout=job.options.timeout,",
        "job.objective, n_trials=n_trials, timeout=None,",
        ("tests/test_cli.py::test_seed_timeout_clock_and_micro_batch_options_take_effect",),
    ),
    Break(
        "--clock wall is ignored",
        "bstune/tuning.py",
        "target=opts.target, clock=opts.clock)",
        'target=opts.target, clock="train")',
        ("tests/test_cli.py::test_seed_timeout_clock_and_micro_batch_options_take_effect",),
    ),
    Break(
        "--micro-batch-size is ignored",
        "bstune/tuning.py",
        "micro_batch_size=opts.micro_batch_size, compile=opts.compile, amp=opts.amp)",
        "micro_batch_size=None, compile=opts.compile, amp=opts.amp)",
        ("tests/test_cli.py::test_seed_timeout_clock_and_micro_batch_options_take_effect",),
    ),
    Break(
        "the task's loss() is ignored",
        "bstune/train.py",
        "loss_hook() if loss_hook is not None else nn.CrossEntropyLoss()",
        "nn.CrossEntropyLoss()",
        ("tests/test_train.py::test_the_task_hooks_loss_metric_and_data_as_a_dict",),
    ),
    Break(
        "the task's metric() is ignored",
        "bstune/train.py",
        'metric_fn = self.task.get("metric") or _accuracy',
        "metric_fn = _accuracy",
        ("tests/test_train.py::test_the_task_hooks_loss_metric_and_data_as_a_dict",),
    ),
    Break(
        "data() as a dict trains on the validation part",
        "bstune/train.py",
        'parts = (*raw["train"], *raw["valid"])',
        'parts = (*raw["valid"], *raw["valid"])',
        ("tests/test_train.py::test_the_task_hooks_loss_metric_and_data_as_a_dict",),
    ),
    Break(
        "visible_gpus ignores CUDA_VISIBLE_DEVICES",
        "bstune/_workers/_plan.py",
        "return listed[:n] if listed else [str(i) for i in range(n)]",
        "return [str(i) for i in range(n)]",
        ("tests/test_workers.py::test_visible_gpus_follow_cuda_visible_devices",),
    ),
    Break(
        "the slow-trial pruner stops a schedule that ends before its next evaluation",
        "bstune/pruners/_slow.py",
        "            return None  # its schedule ends before another evaluation: let it finish\n",
        "            pass\n",
        ("tests/test_slow.py::test_slow_trial_pruner_lets_a_schedule_that_ends_before_its_next_evaluation_finish",),
    ),
    Break(
        "a batch size's peak interval uses the standard error without Student's t",
        "bstune/analysis/_design.py",
        "            half = _t975(dof) * se\n",
        "            half = se\n",
        ("tests/test_design.py::test_a_batch_sizes_peak_and_its_interval_match_the_hand_computed_least_squares",),
    ),
    Break(
        "a disturbed trial stays in the batch-size answers",
        "bstune/analysis/_analyze.py",
        "    clean = [s for s in summaries if s.number not in disturbed]\n",
        "    clean = list(summaries)\n",
        ("tests/test_disturbed.py::test_the_report_leaves_a_disturbed_trial_out_of_the_batch_size_answers_and_says_why",),
    ),
    Break(
        "no trial counts as disturbed, however slow",
        "bstune/analysis/_disturbed.py",
        "        if d is not None and d.ratio < SLOW_RATIO:\n",
        "        if d is not None and d.ratio < SLOW_RATIO / 100:\n",
        ("tests/test_disturbed.py",),
    ),
]


_SKIP = {tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT, tokenize.COMMENT, tokenize.ENCODING,
         tokenize.ENDMARKER}


def _tokens(code: str) -> list[tokenize.TokenInfo]:
    """The tokens that carry meaning: layout (line breaks, indentation) and comments left out."""
    out = []
    try:
        for tok in tokenize.generate_tokens(io.StringIO(textwrap.dedent(code)).readline):
            if tok.type not in _SKIP:
                out.append(tok)
    except (tokenize.TokenError, IndentationError):  # a snippet may end inside brackets
        pass
    return out


def _offsets(text: str) -> list[int]:
    starts, n = [0], 0
    for line in text.splitlines(keepends=True):
        n += len(line)
        starts.append(n)
    return starts


def _key(tokens: list[tokenize.TokenInfo]) -> list[tuple[int, str]]:
    """What a reformat keeps of the tokens: a trailing comma before a closing bracket dropped, a
    string by its value (not its quotes)."""
    out = []
    for i, t in enumerate(tokens):
        if t.string == "," and i + 1 < len(tokens) and tokens[i + 1].string in ")]}":
            continue
        text = t.string
        if t.type == tokenize.STRING:
            try:
                text = repr(ast.literal_eval(text))
            except (ValueError, SyntaxError):  # an f-string: its quotes only
                text = text.replace("'", '"')
        out.append((t.type, text))
    return out


def apply(source: str, old: str, new: str) -> str | None:
    """``source`` with the code ``old`` replaced by ``new``, found by its tokens, so that a
    reformat (other line breaks, spaces, indentation, quotes, trailing commas) does not hide it;
    None unless found exactly once (where the tokens occur more than once, the place where the
    text occurs once decides). ``new`` is written where ``old`` starts, its later lines as written."""
    want_tokens, have = _tokens(old), _tokens(source)
    want, keys = _key(want_tokens), _key(have)
    kept = [t for i, t in enumerate(have) if not (t.string == "," and i + 1 < len(have) and have[i + 1].string in ")]}")]
    hits = [i for i in range(len(keys) - len(want) + 1) if keys[i : i + len(want)] == want] if want else []
    lines = _offsets(source)

    def offset(pos: tuple[int, int]) -> int:
        return lines[pos[0] - 1] + pos[1]

    if len(hits) > 1 and source.count(old) == 1:
        at = source.index(old) + len(old) - len(old.lstrip())
        hits = [i for i in hits if offset(kept[i].start) == at]
    if len(hits) != 1:
        return None
    start, end = offset(kept[hits[0]].start), offset(kept[hits[0] + len(want) - 1].end)
    return source[:start] + new.strip() + source[end:]


def check(b: Break, path: Path) -> str | None:
    """Why the break cannot be applied (not found once, or the result is not Python), else None."""
    original = path.read_text(encoding="utf-8")
    broken = apply(original, b.old, b.new)
    if broken is None:
        return "the code to break is not found exactly once"
    try:
        ast.parse(broken)
    except SyntaxError as e:
        return f"the broken code is not Python ({e.msg}, line {e.lineno})"
    return None


def caught(b: Break) -> bool:
    """Apply the break, run its tests, put the code back; True when a test failed."""
    path = ROOT / b.path
    original = path.read_text(encoding="utf-8")
    problem = check(b, path)
    if problem is not None:
        raise SystemExit(f"{b.name}: {problem} in {b.path}; update tests/breaks.py")
    try:
        path.write_text(apply(original, b.old, b.new) or original, encoding="utf-8")
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", *b.tests],
            cwd=ROOT, capture_output=True, text=True,
        )
    finally:
        path.write_text(original, encoding="utf-8")
    return proc.returncode == 1  # tests failed (not 5: none collected; not 2: an error)


def check_all() -> int:
    """``--check``: every break applies, to the code as it is and to the code reformatted
    (``ruff format`` with the project's settings, which rewraps many lines); no test runs."""
    bad = 0
    for b in BREAKS:
        path = ROOT / b.path
        done = subprocess.run([sys.executable, "-m", "ruff", "format", "--stdin-filename", str(path), "-"],
                              input=path.read_text(), capture_output=True, text=True, cwd=ROOT)
        if done.returncode != 0:
            raise SystemExit(f"ruff format failed (pip install ruff): {done.stderr.strip()[:300]}")
        reformatted = done.stdout
        problems = [check(b, path)]
        if reformatted:
            tmp = Path(tempfile.mkdtemp()) / path.name
            tmp.write_text(reformatted)
            problems.append(check(b, tmp))
        for where, problem in zip(("as it is", "reformatted"), problems, strict=False):
            if problem is not None:
                bad += 1
                print(f"BROKEN  {b.name} ({where}): {problem}")
    print(f"{len(BREAKS) - bad} of {len(BREAKS)} breaks apply, as the code is and reformatted" if not bad else
          f"{bad} problems")
    return 1 if bad else 0


def main(argv: list[str]) -> int:
    if argv == ["--check"]:
        return check_all()
    # Killed by `timeout` or a terminal's close: exit through the finally that puts the code back.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    chosen = [b for b in BREAKS if not argv or any(a in b.name for a in argv)]
    missed = 0
    for b in chosen:
        ok = caught(b)
        missed += not ok
        print(f"{'caught' if ok else 'MISSED'}  {b.name}", flush=True)
    print(f"{len(chosen) - missed} of {len(chosen)} breaks caught")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
