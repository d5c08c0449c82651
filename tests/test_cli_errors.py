"""Bad input to ``bstune optimize``: one line on stderr, a non-zero exit, the same table as the docs.

Every row runs the real command in-process against real files (task scripts, search spaces, storage
URLs) and checks the exit code and the whole message. docs/errors.md shows the same table; the last
test fails when the two drift apart, and prints the rows to paste.
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from bstune.cli import main

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "errors.md"
SPACE_OK = "batch_size: {low: 16, high: 64}\nlearning_rate: {low: 1.0e-4, high: 1.0e-2}\nepochs: {low: 1, high: 3}\n"

#: Files the rows use, written into an empty folder first.
FILES = {
    "notyaml.yaml": "batch_size: [16\n",
    "nobatch.yaml": "name: nobatch\nlearning_rate: {low: 1.0e-4, high: 1.0e-2}\nepochs: {low: 1, high: 3}\n",
    "lrorder.yaml": SPACE_OK.replace("{low: 1.0e-4, high: 1.0e-2}", "{low: 1.0e-2, high: 1.0e-4}"),
    "scaling.yaml": SPACE_OK.replace("high: 1.0e-2}", "high: 1.0e-2, scaling: cubic, reference_batch_size: 32}"),
    "nopow.yaml": SPACE_OK.replace("{low: 16, high: 64}", "{low: 33, high: 60, powers_of_two: true}"),
    "epochs0.yaml": SPACE_OK.replace("epochs: {low: 1", "epochs: {low: 0"),
    "task.txt": "X = 1\n",
    "broken.py": "import no_such_module_here\n",
    "data_only.py": "def data():\n    return None\n",
    "empty.py": "X = 1\n",
    "defaults.py": "DEFAULTS = {'budget': 5}\n\n\ndef train(hp, run):\n    pass\n",
    "own_loop.py": "def train(hp, run):\n    pass\n",
    "amp_yes.py": "DEFAULTS = {'amp': 'yes'}\n\n\ndef train(hp, run):\n    pass\n",
    "tiny.py": "import torch\n\n\ndef data():\n    x = torch.zeros(8, 2)\n    y = torch.zeros(8, dtype=torch.long)\n"
               "    return x, y, x, y\n\n\ndef model(hp):\n    return torch.nn.Linear(2, 2)\n",
}

E = "bstune: error: "
#: (what is wrong, arguments after `bstune optimize` (or after `bstune` when they start with another
#: command), exit code, message; a trailing "..." = prefix)
ROWS = [
    ("option: zero budget", "task.py --time-budget 0", 1, E + "--time-budget must be a number greater than 0; got 0"),
    ("option: target with a zero limit", "task.py --target 0.9 --time-budget 0", 1,
     E + "--time-budget must be a number greater than 0; got 0"),
    ("option: zero trials", "task.py --n-trials 0", 1, E + "--n-trials must be an integer of at least 1; got 0"),
    ("option: not a number", "task.py --n-trials many", 2,
     E + "Invalid value for '--n-trials': Input should be a valid integer, unable to parse string as an integer"),
    ("option: negative timeout", "task.py --timeout -1", 1, E + "--timeout must be a number greater than 0; got -1"),
    ("option: unknown clock", "task.py --clock cpu", 1, E + "--clock must be 'train' or 'wall'; got 'cpu'"),
    ("option: target outside accuracy's range", "own_loop.py --target 90", 1,
     E + "--target 90 is outside the range of accuracy, 0 to 1; for 90% give 0.9"),
    ("option: negative confirmations", "task.py --confirm -1", 1, E + "--confirm must be an integer of at least 0; got -1"),
    ("option: zero micro-batch", "task.py --micro-batch-size 0", 1,
     E + "--micro-batch-size must be an integer of at least 1; got 0"),
    ("option: --compile with the script's own loop", "task.py --compile", 1,
     E + "--compile: 'task.py' defines train(hp, run) and owns its loop; compile the model there instead"),
    ("option: --no-amp with the script's own loop", "task.py --no-amp", 1,
     E + "--amp/--no-amp: 'task.py' defines train(hp, run) and owns its loop; set its precision there instead"),
    ("option: --amp on the CPU", "tiny.py --amp --device cpu", 1,
     E + "bf16 autocast (--amp, Trainer(amp=True)) runs on CUDA only; this trainer runs on cpu"),
    ("option: --amp for workers on the CPU", "tiny.py --amp --workers 2 --device cpu", 1,
     E + "bf16 autocast (--amp, Trainer(amp=True)) runs on CUDA only; these workers run on cpu"),
    ("option: zero workers", "task.py --workers 0", 1, E + "--workers must be an integer of at least 1; got 0"),
    ("option: one GPU for two workers", "task.py --workers 2 --device cuda:0", 1,
     E + "--device cuda:0 names one GPU, and two trials never share one; "
     "use --device cuda to give each of the 2 workers its own GPU"),
    ("option: unknown device", "task.py --workers 2 --device tpu", 1,
     E + "--device must be auto, cpu, cuda or cuda:N; got 'tpu'"),
    ("study-batch: two batch sizes", "study-batch task.py --batch-sizes 16,64", 1,
     E + "--batch-sizes must list three or more positive batch sizes; got [16, 64]"),
    ("study-batch: not integers", "study-batch task.py --batch-sizes 16,x,64", 1,
     E + "--batch-sizes must be comma-separated integers, e.g. 16,64,256; got '16,x,64'"),
    ("study-batch: zero seeds", "study-batch task.py --seeds 0", 1, E + "--seeds must be an integer of at least 1; got 0"),
    ("study-batch: too few trials", "study-batch task.py --batch-sizes 16,64,256 --max-trials 12", 1,
     E + "--max-trials 12 is too few for 3 batch sizes with 2 more seed(s) each (18 trials at the least); "
     "raise it, or pass fewer --batch-sizes or --seeds"),
    ("option: zero failures allowed", "task.py --max-consecutive-failures 0", 1,
     E + "--max-consecutive-failures must be an integer of at least 1; got 0"),
    ("option: zero heartbeat", "task.py --heartbeat-interval 0", 1,
     E + "--heartbeat-interval must be an integer of at least 1; got 0"),
    ("option: task option without =", "task.py --task-option lr", 1, E + "--task-option must look like KEY=VALUE; got 'lr'"),
    ("option: unknown option", "task.py --no-such-option", 2,
     E + "No such option: --no-such-option (Possible options: --task-option)"),
    ("space: unknown name", "task.py --space nope", 1,
     E + "search space 'nope': no such file, and not a built-in space (default, linear_scaling, lstm, lstm_sqrt, mlp)"),
    ("space: not YAML", "task.py --space notyaml.yaml", 1, E + "search space notyaml.yaml: not valid YAML at line 2"),
    ("space: no batch_size", "task.py --space nobatch.yaml", 1,
     E + "search space nobatch.yaml: field 'batch_size' is required but missing"),
    ("space: low above high", "task.py --space lrorder.yaml", 1,
     E + "search space lrorder.yaml: field 'learning_rate' must have low <= high; got low=0.01, high=0.0001"),
    ("space: unknown LR scaling", "task.py --space scaling.yaml", 1,
     E + "search space scaling.yaml: field 'learning_rate.scaling' must be one of none, linear, sqrt; got 'cubic'"),
    ("space: no power of two in range", "task.py --space nopow.yaml", 1,
     E + "search space nopow.yaml: field 'batch_size' must contain a power of two when powers_of_two is true; "
     "got [33, 60]"),
    ("space: zero epochs", "task.py --space epochs0.yaml", 1,
     E + "search space epochs0.yaml: field 'epochs.low' must be at least 1; got 0"),
    ("script: missing", "missing.py", 1, E + "task script 'missing.py': no such file"),
    ("script: not Python", "task.txt", 1, E + "task script 'task.txt': must be a Python file ending in .py"),
    ("script: import fails", "broken.py", 1,
     E + "task script 'broken.py': importing it raised ModuleNotFoundError: No module named 'no_such_module_here'"),
    ("script: data() without model(hp)", "data_only.py", 1, E + "task script 'data_only.py': defines data() but not model(hp)"),
    ("script: defines nothing", "empty.py", 1,
     E + "task script 'empty.py': defines neither data() and model(hp) nor train(hp, run)"),
    ("script: unknown DEFAULTS key", "defaults.py", 1,
     E + "task script 'defaults.py': DEFAULTS has unknown keys ['budget'] "
     "(known: ['amp', 'metric_direction', 'metric_name', 'n_trials', 'space', 'target', 'time_budget'])"),
    ("script: DEFAULTS amp not a bool", "amp_yes.py", 1,
     E + "task script 'amp_yes.py': DEFAULTS['amp'] must be True or False; got 'yes'"),
    ("option: negative storage retry", "task.py --storage-retry -1", 1,
     E + "--storage-retry must be a number of seconds of at least 0; got -1"),
    ("storage: unknown kind", "task.py --storage redis://localhost/0", 1,
     E + "storage 'redis://localhost/0': unknown kind of storage; "
     "use sqlite:///FILE.db, postgresql://HOST/DB or journal:FILE.log"),
    ("storage: SQLite folder missing", "task.py --storage sqlite:///no/such/folder/bstune.db", 1,
     E + "storage 'sqlite:///no/such/folder/bstune.db': the folder 'no/such/folder' does not exist"),
    ("storage: journal without a path", "task.py --storage journal:", 1,
     E + "storage 'journal:': journal storage needs a file path, as in journal:bstune.log"),
    ("storage: server not there, no retry (password hidden)",
     "task.py --storage postgresql://ann:s3cret@127.0.0.1:1/bstune --storage-retry 0", 1,
     E + "storage 'postgresql://ann:***@127.0.0.1:1/bstune': cannot open it (..."),
    ("storage: driver not installed (password hidden)", "task.py --storage mysql://ann:s3cret@127.0.0.1:1/bstune", 1,
     E + "storage 'mysql://ann:***@127.0.0.1:1/bstune': the database driver is not installed "
     "(Failed to import DB access module for the specified storage URL. Please install appropriate one.)"),
]


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    shutil.copy(REPO / "tests" / "data" / "synthetic_task.py", tmp_path / "task.py")
    for name, text in FILES.items():
        (tmp_path / name).write_text(text)
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.parametrize(("what", "args", "code", "message"), ROWS, ids=[r[0] for r in ROWS])
def test_bad_input_gives_one_line_and_an_exit_code(
    folder: Path, capsys: pytest.CaptureFixture[str], what: str, args: str, code: int, message: str
) -> None:
    with pytest.raises(SystemExit, match=rf"^{code}$"):
        main(_command(args))
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    if message.endswith("..."):
        assert lines[0].startswith(message[:-3]), lines[0]
    else:
        assert lines[0] == message
    assert "s3cret" not in out + err
    assert not list(folder.glob("*.db")) and not list(folder.glob("*.log"))  # nothing was created


def _command(args: str) -> list[str]:
    words = args.split()
    return words if words[0] in ("study-batch",) else ["optimize", *words]


def _markdown_rows() -> list[str]:
    return [f"| {what} | `bstune {' '.join(_command(args))}` | {code} | `{message}` |" for what, args, code, message in ROWS]


def test_docs_show_the_same_table() -> None:
    text = DOCS.read_text()
    block = re.search(r"<!-- errors:table -->\n(.*?)<!-- /errors:table -->", text, re.S)
    assert block is not None, "docs/errors.md lacks the errors:table markers"
    shown = [line for line in block.group(1).splitlines() if line.startswith("| ") and "`bstune " in line]
    assert shown == _markdown_rows(), "\n" + "\n".join(_markdown_rows())
