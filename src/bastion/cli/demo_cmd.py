"""`bastion demo`: the whole evaluation story in under a minute on a laptop CPU.

Trains a small CNN on scikit-learn's handwritten digits, evaluates it against the attack ensemble at
several L-inf budgets, and writes the reports, the model (TorchScript, plus its weights as an ordinary
``torch.save`` checkpoint and as safetensors) and the train and test data into one folder, so every command
of the README can run on real files.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import typer

from bastion.cli.common import EXIT_OK, command_line, handle_errors, make_console, progress_bar
from bastion.cli.paths import atomic_path, check_outputs

#: L-inf budgets on [0, 1] pixels: from barely visible to strong enough to break an undefended model
DEMO_EPS = "0.05,0.1,0.2,0.3"
#: (training epochs, test examples evaluated) for the full and --quick demos
FULL = (15, 200)
QUICK = (5, 40)
#: test examples written to test.npz by both demos (the README's monitor windows need 100 or more)
TEST_FILE_EXAMPLES = 200
#: what the demo writes into --out (the reports are report.html, report.md, result.json)
MODEL, CHECKPOINT, WEIGHTS, TRAIN, TEST = "model.pt", "ckpt.pt", "model.safetensors", "train.npz", "test.npz"
FILES = (MODEL, CHECKPOINT, WEIGHTS, TRAIN, TEST, "report.html", "report.md", "result.json")
#: the architecture of the demo model, as --factory spells it for the safetensors weights
FACTORY = "bastion.zoo:SmallCNN(1, 10, 8, width=16)"


def register(app: typer.Typer) -> None:
    """Add ``bastion demo`` to the app."""
    app.command("demo")(demo_command)


@handle_errors
def demo_command(
    out: Path = typer.Option(Path("bastion-demo"), "--out", "-o", help="Folder for the model, data and reports."),
    quick: bool = typer.Option(False, "--quick", help="Fewer epochs and examples (a few seconds).", metavar=""),
    seed: int = typer.Option(0, "--seed", help="Random seed for training and attacks."),
    force: bool = typer.Option(False, "--force", help="Overwrite the files of an earlier demo in --out.",
                               metavar=""),
) -> None:
    """Train a digits CNN, attack it, and write a robustness report you can open in a browser.

    Examples:

      bastion demo                      # writes ./bastion-demo/report.html and friends

      bastion demo --quick --out /tmp/demo

    Writes model.pt (TorchScript), ckpt.pt (its state dict, torch.save), model.safetensors (for
    --factory 'bastion.zoo:SmallCNN(1, 10, 8, width=16)'), train.npz and test.npz (arrays x, y) and the
    reports; files of an earlier demo are kept unless --force.

    Then re-run the evaluation on the saved files:

      bastion evaluate --model bastion-demo/model.pt --data bastion-demo/test.npz --eps 0.1,0.2
    """
    import torch

    import bastion as bn
    from bastion.assess.result import provenance
    from bastion.cli.evaluate_cmd import parse_eps

    # The demo's models are tiny: one thread avoids oversubscribing a busy machine, and is faster here.
    torch.set_num_threads(1)
    epochs, n_test = QUICK if quick else FULL
    values, labels = parse_eps(DEMO_EPS)
    console = make_console()
    paths = check_outputs(out, FILES, force=force, what="--out")
    data = bn.datasets.digits()
    x, y = data.x_test[:n_test], data.y_test[:n_test]
    with progress_bar(True) as bar:
        task = bar.add_task("training SmallCNN on digits", total=epochs)
        torch.manual_seed(seed)
        net: torch.nn.Module = bn.zoo.SmallCNN(1, data.num_classes, 8, width=16)
        net = bn.zoo.train(net, data.x_train, data.y_train, epochs=epochs, lr=2e-3, seed=seed,
                           progress=lambda epoch, _loss: bar.update(task, completed=epoch + 1))
        ev_task = bar.add_task("evaluating", total=None)

        def on_progress(what: str, done: int, total: int) -> None:
            bar.update(ev_task, description=what, completed=done, total=total)

        result = bn.evaluate(net, x, y, norm="linf", epsilons=values, epsilon_labels=labels, suite="standard",
                             seed=seed, progress=on_progress)
    from safetensors.torch import save_file

    model_path, data_path = paths[MODEL], paths[TEST]
    with warnings.catch_warnings(), atomic_path(model_path) as tmp:
        # TorchScript is deprecated upstream but remains the one code-free whole-model format we can load.
        warnings.simplefilter("ignore")
        torch.jit.trace(net, x[:1]).save(str(tmp))
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    with atomic_path(paths[CHECKPOINT]) as tmp:
        torch.save(state, tmp)
    with atomic_path(paths[WEIGHTS]) as tmp:
        save_file(state, str(tmp))
    test_split = (data.x_test[:TEST_FILE_EXAMPLES], data.y_test[:TEST_FILE_EXAMPLES])
    for name, (xs, ys) in ((TEST, test_split), (TRAIN, (data.x_train, data.y_train))):
        with atomic_path(paths[name]) as tmp, open(tmp, "wb") as fh:
            np.savez_compressed(fh, x=xs.numpy(), y=ys.numpy())
    result.provenance = provenance(model_path, data_path, command_line())
    written = result.save(out)
    console.print(f"clean accuracy {result.clean_accuracy:.1%}; robust accuracy "
                  + ", ".join(f"ε={lab}: {acc:.1%}" for lab, acc in zip(labels, result.robust_accuracy, strict=True)),
                  highlight=False)
    for f in result.findings:
        console.print(f"{f.severity} {f.check}: {f.message}", highlight=False)
    console.print(f"report:  {written['html']}\nmarkdown: {written['markdown']}\njson:    {written['json']}\n"
                  f"model:   {model_path} (TorchScript), {paths[CHECKPOINT]} (state dict), {paths[WEIGHTS]}\n"
                  f"data:    {data_path}, {paths[TRAIN]}", highlight=False)
    console.print(f"next: bastion evaluate --model {model_path} --data {data_path} --eps 0.1,0.2",
                  highlight=False)
    raise typer.Exit(EXIT_OK)
