"""End-to-end: a small char-level language model trains identically with
torch.nn.LSTM and with lstm_ext.LSTM from the same initialisation."""
import torch
from torch import nn

import lstm_ext

TEXT_SEED = 20240601
STEPS = 20


def make_text(n_chars=4000):
    """A fixed generated text: words drawn from a small vocabulary with a
    seeded generator (no files, no downloads)."""
    words = ("the quick brown fox jumps over a lazy dog while seven wizards quietly "
             "hex jolly zebras and pack my box with five dozen liquor jugs").split()
    g = torch.Generator().manual_seed(TEXT_SEED)
    out = []
    while sum(len(w) + 1 for w in out) < n_chars:
        out.append(words[int(torch.randint(len(words), (1,), generator=g))])
    text = " ".join(out)[:n_chars] + "."
    return text


class CharLM(nn.Module):
    def __init__(self, lstm_cls, vocab, emb=16, hidden=32, layers=2):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.lstm = lstm_cls(emb, hidden, num_layers=layers, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, tokens, hx=None):
        out, hx = self.lstm(self.emb(tokens), hx)
        return self.head(out), hx


def batches(data, steps, batch=8, seq=32):
    g = torch.Generator().manual_seed(TEXT_SEED + 1)
    for _ in range(steps):
        starts = torch.randint(0, data.numel() - seq - 1, (batch,), generator=g)
        chunk = torch.stack([data[s:s + seq + 1] for s in starts.tolist()])
        yield chunk[:, :-1], chunk[:, 1:]


def train(model, data, vocab, device, steps=STEPS):
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for inp, tgt in batches(data, steps):
        inp, tgt = inp.to(device), tgt.to(device)
        logits, _ = model(inp)
        loss = nn.functional.cross_entropy(logits.reshape(-1, vocab), tgt.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_char_lm_training_matches_torch(device):
    text = make_text()
    chars = sorted(set(text))
    data = torch.tensor([chars.index(ch) for ch in text])
    vocab = len(chars)
    torch.manual_seed(0)
    ref = CharLM(nn.LSTM, vocab).to(device)
    ext = CharLM(lstm_ext.LSTM, vocab).to(device)
    ext.load_state_dict(ref.state_dict(), strict=True)
    ref_losses = train(ref, data, vocab, device)
    ext_losses = train(ext, data, vocab, device)
    assert len(ext_losses) == STEPS
    # the model does learn (so the comparison is not between two stuck runs)
    assert ref_losses[-1] < ref_losses[0] - 0.3, ref_losses
    torch.testing.assert_close(torch.tensor(ext_losses, dtype=torch.float64),
                               torch.tensor(ref_losses, dtype=torch.float64), rtol=1e-5, atol=0)
    # and the trained weights agree too
    for (n, p), (_, q) in zip(ref.named_parameters(), ext.named_parameters()):
        torch.testing.assert_close(q, p, atol=1e-4, rtol=1e-3, msg=n)
