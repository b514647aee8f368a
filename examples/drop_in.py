"""Swap torch.nn.LSTM for lstm_ext.LSTM in an existing model.

The model below is written against torch.nn. Passing ``lstm_cls=lstm_ext.LSTM``
is the whole change: the parameters have the same names, so a checkpoint
trained with either loads into the other, and ``forward`` returns the same
``(output, (h_n, c_n))``. It also compiles with ``fullgraph=True``, which
torch.nn.LSTM does not.

    PYTHONPATH=. python3 examples/drop_in.py [--steps 30] [--compile]   # from the checkout
"""
import argparse

import torch
from torch import nn

import lstm_ext


class Tagger(nn.Module):
    def __init__(self, lstm_cls, vocab=32, emb=16, hidden=32, tags=4):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.lstm = lstm_cls(emb, hidden, num_layers=2, batch_first=True, bidirectional=True)
        self.head = nn.Linear(2 * hidden, tags)

    def forward(self, tokens):
        output, (h_n, c_n) = self.lstm(self.emb(tokens))
        return self.head(output)


def batch(generator, size=16, length=20, vocab=32):
    tokens = torch.randint(0, vocab, (size, length), generator=generator)
    return tokens, tokens % 4  # the tag is a function of the token


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--compile", action="store_true", help="torch.compile(fullgraph=True) the lstm_ext model")
    args = parser.parse_args(argv)

    torch.manual_seed(0)
    reference = Tagger(nn.LSTM)
    model = Tagger(lstm_ext.LSTM)
    model.load_state_dict(reference.state_dict())  # same keys, strict=True
    if args.compile:
        model = torch.compile(model, fullgraph=True)

    losses = {}
    for name, net in (("torch.nn.LSTM", reference), ("lstm_ext.LSTM", model)):
        optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
        generator = torch.Generator().manual_seed(1)
        for _ in range(args.steps):
            tokens, tags = batch(generator)
            loss = nn.functional.cross_entropy(net(tokens).flatten(0, 1), tags.flatten())
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        losses[name] = loss.item()
        print(f"{name:>14}: loss after {args.steps} steps = {loss.item():.6f}")
    gap = abs(losses["torch.nn.LSTM"] - losses["lstm_ext.LSTM"])
    print(f"difference: {gap:.2e}")
    return losses


if __name__ == "__main__":
    main()
