"""Look inside a recurrence: every step's hidden state of lstm_ext.RNN and LSTM.

Two things, both from untrained modules:

1. A heatmap (``--out``, default ``examples/hidden_states.png``) of ``h_t`` at
   every step of an ``lstm_ext.RNN`` and of ``h_t`` and ``c_t`` of an
   ``lstm_ext.LSTM``, unrolled over the letters of a word (one-hot inputs).
   The LSTM's per-step states come from ``LSTM(...)(x, return_all_states=True)``,
   the RNN's likewise. A letter that occurs twice ("r", "e", "c" in
   "recurrence") is the same input both times, yet the state columns differ:
   the state carries what came before it.

2. The toy recurrence ``h_t = 0.5 h_{t-1} + x_t``, run by
   ``lstm_ext.RNN(1, 1, nonlinearity='relu', bias=False)`` with W_ih = 1 and
   W_hh = 0.5. For inputs (2, -1, 3) the final state is 3 (h = 2, 0, 3).
   Reordered as (-1, 2, 3) it is 4: relu clips h_1 = -1 to 0, so the -1 is
   forgotten (h = 0, 2, 4). Without the relu, the linear arithmetic would give
   3.75 (h = -1, 1.5, 3.75): order matters even then, because each step halves
   what came before.

    PYTHONPATH=. python3 examples/hidden_states.py [--out examples/hidden_states.png]   # from the checkout
"""
import argparse
import pathlib

import matplotlib

matplotlib.use("Agg")  # write files only, no display needed
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

import lstm_ext  # noqa: E402

DEFAULT_OUT = pathlib.Path(__file__).resolve().parent / "hidden_states.png"
LETTERS = "abcdefghijklmnopqrstuvwxyz"


def toy_rnn():
    """``h_t = relu(1 * x_t + 0.5 * h_{t-1})`` as an lstm_ext.RNN."""
    rnn = lstm_ext.RNN(1, 1, nonlinearity="relu", bias=False)
    with torch.no_grad():
        rnn.weight_ih_l0.fill_(1.0)
        rnn.weight_hh_l0.fill_(0.5)
    return rnn


def run_toy(rnn, inputs):
    """Every step's state and the final one, from the module."""
    x = torch.tensor(inputs, dtype=torch.float32).unsqueeze(-1)  # unbatched [T, 1]
    with torch.no_grad():
        output, h_n = rnn(x)
    return output.squeeze(-1).tolist(), h_n.item()


def linear_toy(inputs):
    """The same recurrence with no relu, in plain arithmetic."""
    h, steps = 0.0, []
    for x in inputs:
        h = 0.5 * h + x
        steps.append(h)
    return steps, h


def one_hot_word(word):
    return torch.nn.functional.one_hot(torch.tensor([LETTERS.index(ch) for ch in word]), len(LETTERS)).float()


def heatmap(ax, fig, values, title, word, label):
    """values [T, H] -> image with hidden units down and time steps across."""
    limit = values.abs().max().item()  # a symmetric scale: white is 0
    image = ax.imshow(values.T.numpy(), aspect="auto", cmap="RdBu_r", vmin=-limit, vmax=limit, interpolation="nearest")
    ax.set_title(title, fontsize=11)
    ax.set_ylabel("hidden unit")
    ax.set_xticks(range(len(word)), [f"{t}\n{ch}" for t, ch in enumerate(word)])
    ax.set_xlabel("time step t (input letter)")
    colorbar = fig.colorbar(image, ax=ax, pad=0.015)
    colorbar.set_label(label)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=pathlib.Path, default=DEFAULT_OUT, help="PNG to write (default %(default)s)")
    parser.add_argument("--word", default="recurrence", help="the input sequence, letters a-z (default %(default)s)")
    parser.add_argument("--hidden", type=int, default=12, help="hidden units of both modules (default 12)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    word = args.word.lower()
    if not word or any(ch not in LETTERS for ch in word):
        parser.error("--word takes letters a-z only")

    # ------------------------------------------------------------ the toy recurrence
    rnn = toy_rnn()
    seed_inputs, reordered = (2.0, -1.0, 3.0), (-1.0, 2.0, 3.0)
    seed_steps, seed_final = run_toy(rnn, seed_inputs)
    relu_steps, relu_final = run_toy(rnn, reordered)
    linear_steps, linear_final = linear_toy(reordered)
    fmt = lambda values: ", ".join(f"{v:g}" for v in values)  # noqa: E731
    print("toy recurrence h_t = 0.5 h_{t-1} + x_t, computed with lstm_ext.RNN(1, 1, nonlinearity='relu', bias=False),")
    print("W_ih = 1, W_hh = 0.5, h_0 = 0 (so the module computes h_t = relu(0.5 h_{t-1} + x_t))")
    print(f"  inputs ({fmt(seed_inputs)}):  h = {fmt(seed_steps)}  -> final state {seed_final:g}")
    print("    (h1 = 2, h2 = 0.5*2 - 1 = 0, h3 = 0 + 3 = 3; no step goes negative, so relu changes nothing)")
    print(f"  reordered ({fmt(reordered)}):  h = {fmt(relu_steps)}  -> final state {relu_final:g}")
    print("    (h1 = relu(-1) = 0: relu clips the -1 away; h2 = 0 + 2 = 2, h3 = 0.5*2 + 3 = 4)")
    print(f"  reordered, linear (no relu):  h = {fmt(linear_steps)}  -> final state {linear_final:g}")
    print("    (h1 = -1, h2 = -0.5 + 2 = 1.5, h3 = 0.75 + 3 = 3.75: each step halves the past, so")
    print("     even without relu the order of the inputs changes the result)")

    # ------------------------------------------------------------ the heatmaps
    torch.manual_seed(args.seed)
    x = one_hot_word(word)  # unbatched [T, 26]
    rnn = lstm_ext.RNN(len(LETTERS), args.hidden)
    lstm = lstm_ext.LSTM(len(LETTERS), args.hidden)
    with torch.no_grad():
        _, _, rnn_h = rnn(x, return_all_states=True)  # [layers * directions, T, H]
        _, _, lstm_states = lstm(x, return_all_states=True)  # LSTMStates(h, c), each [1, T, H]
    rnn_h, lstm_h, lstm_c = rnn_h[0], lstm_states.h[0], lstm_states.c[0]  # [T, H] each

    fig = plt.figure(figsize=(11, 13), layout="constrained")
    grid = fig.add_gridspec(4, 1, height_ratios=[1, 1, 1, 0.8])
    heatmap(fig.add_subplot(grid[0]), fig, rnn_h, "lstm_ext.RNN (tanh): hidden state $h_t$ at every step", word, "$h_t$")
    heatmap(fig.add_subplot(grid[1]), fig, lstm_h, "lstm_ext.LSTM: hidden state $h_t$ at every step", word, "$h_t$")
    heatmap(fig.add_subplot(grid[2]), fig, lstm_c, "lstm_ext.LSTM: cell state $c_t$ at every step", word, "$c_t$")

    toy = fig.add_subplot(grid[3])
    steps = [1, 2, 3]
    toy.plot(steps, seed_steps, "o-", label=f"inputs ({fmt(seed_inputs)}), relu: final {seed_final:g}")
    toy.plot(steps, relu_steps, "s-", label=f"reordered ({fmt(reordered)}), relu: final {relu_final:g}")
    toy.plot(steps, linear_steps, "^--", label=f"reordered ({fmt(reordered)}), linear: final {linear_final:g}")
    for series, dy in ((seed_steps, -3), (relu_steps, 0), (linear_steps, -9)):
        toy.annotate(f"{series[-1]:g}", (3, series[-1]), textcoords="offset points", xytext=(9, dy))
    toy.axhline(0, color="grey", linewidth=0.8)
    toy.set_xticks(steps)
    toy.set_xlim(0.8, 3.4)
    toy.set_xlabel("time step t")
    toy.set_ylabel("$h_t$")
    toy.set_title(
        r"Toy recurrence $h_t = 0.5\,h_{t-1} + x_t$: lstm_ext.RNN(1, 1, nonlinearity='relu') vs the linear arithmetic."
        "\nSame inputs, another order, another final state",
        fontsize=11,
    )
    toy.legend(loc="upper left", fontsize=9)
    fig.suptitle(
        f"Every step's state, unrolled over \"{word}\" (one-hot letters, untrained weights, seed {args.seed}).\n"
        "A repeated letter is the same input each time, yet its column differs: the state carries the context.",
        fontsize=12,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=110)
    plt.close(fig)
    print(f"wrote {args.out}")
    return {
        "final": seed_final,
        "reordered": relu_final,
        "reordered_linear": linear_final,
        "steps": {"final": seed_steps, "reordered": relu_steps, "reordered_linear": linear_steps},
        "png": str(args.out),
    }


if __name__ == "__main__":
    main()
