"""Regenerates the documentation's figures from a real run of the demo.

    python docs/make_figures.py                 # full demo run (minutes)
    python docs/make_figures.py --epochs 3      # quicker, rougher shapes

Runs `examples/demo.py` into a temporary folder (or `--demo-output`), then
writes into `docs/figures/`, for each learnable activation of the demo:

- `<activation>_final.png`: the initial (dashed) and learned shapes of every
  layer (`plotting.plot_final`);
- `<activation>_evolution.png`: the shapes at every epoch
  (`plotting.plot_evolution`);

plus `abu_evolution.gif` (`plotting.animate_evolution`) and `results.md`, the
demo's table; and it writes the demo's explain tables and health findings
into `docs/understanding.md`, between its `<!-- demo:... -->` markers.
Nothing in docs/figures is drawn by hand.
"""

import argparse
import os
import re
import shutil
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "examples"))

import demo  # noqa: E402

from keras_learnact import plotting  # noqa: E402
from keras_learnact import snapshots  # noqa: E402


def render(demo_output, figures):
    """Writes the figures of one demo output folder.

    Args:
        demo_output: a folder written by `examples/demo.py`.
        figures: the folder to write the figures into.

    Returns:
        The names of the files written.

    Example:

        render("demo_output", "docs/figures")
    """
    os.makedirs(figures, exist_ok=True)
    written = []
    folder = os.path.join(demo_output, "snapshots")
    for file in sorted(os.listdir(folder)):
        name = file[:-len(".npz")]
        snaps = snapshots.load(os.path.join(folder, file))
        for kind, draw in (("final", plotting.plot_final),
                           ("evolution", plotting.plot_evolution)):
            target = os.path.join(figures, f"{name}_{kind}.png")
            draw(snaps).savefig(target, dpi=80)
            written.append(os.path.basename(target))
        if name == "abu":
            target = os.path.join(figures, "abu_evolution.gif")
            plotting.animate_evolution(snaps, target, fps=3)
            written.append(os.path.basename(target))
    shutil.copy(os.path.join(demo_output, "results.md"),
                os.path.join(figures, "results.md"))
    return written + ["results.md"]


PAGE = os.path.join(HERE, "understanding.md")
MARKED = re.compile(
    r"(<!-- demo:(explain|health):([\w-]+) -->).*?<!-- demo:end -->", re.S)


def write_understanding(demo_output, page=PAGE):
    """Puts the demo's explain tables and health findings into the page.

    Replaces what lies between `<!-- demo:explain:NAME -->` and
    `<!-- demo:end -->` with `keras_learnact.explain` on the demo's
    snapshot file NAME (the first 3 units of each layer), and between
    `<!-- demo:health:NAME -->` and `<!-- demo:end -->` with its findings.

    Args:
        demo_output: a folder written by `examples/demo.py`.
        page: the Markdown page to update.

    Returns:
        The names filled in.

    Example:

        write_understanding("demo_output")
    """
    import keras_learnact as kla
    from keras_learnact import health

    text = open(page).read()
    filled = []

    def fill(match):
        start, kind, name = match.groups()
        snaps = snapshots.load(
            os.path.join(demo_output, "snapshots", f"{name}.npz"))
        if kind == "explain":
            body = kla.explain(snaps).to_markdown(max_channels=3)
        else:
            body = "\n".join(f"- {line}" for line in health.summarize(
                snaps.findings)) or "No finding."
        filled.append(f"{kind}:{name}")
        return f"{start}\n\n{body}\n\n<!-- demo:end -->"

    text = MARKED.sub(fill, text)
    with open(page, "w") as f:
        f.write(text)
    return filled


def main(argv=None):
    """Runs the demo and renders the figures.

    Args:
        argv: command-line arguments (default: `sys.argv[1:]`).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--demo-output",
                        help="reuse this demo output instead of running it")
    parser.add_argument("--figures", default=os.path.join(HERE, "figures"))
    args = parser.parse_args(argv)
    output = args.demo_output
    if output is None:
        output = tempfile.mkdtemp(prefix="demo_")
        demo.main(["--epochs", str(args.epochs), "--output", output])
    for name in render(output, args.figures):
        print(os.path.join(args.figures, name))
    for name in write_understanding(output):
        print(f"docs/understanding.md: {name}")


if __name__ == "__main__":
    main()
