"""The reference programs A–C, F and G in PyTorch (the recorded reference has PyTorch figures for A–C),
as the report runs them when PyTorch is installed: `python3 torch_programs.py --program C
--threads 2 --data-dir DIR`. Keras's initialisation (glorot_uniform, zero biases) and optimizer
defaults (Adam ε = 1e-7, RMSprop ρ = 0.9, ε = 1e-7) are set explicitly, so the programs are the
same training problem. Prints one JSON line with the same fields as our examples' `--json`."""
import os, sys, time

sys.path.insert(0, os.path.dirname(__file__))
import common

a = common.args()
import torch  # noqa: E402
from torch import nn  # noqa: E402

torch.set_num_threads(a.threads)
torch.manual_seed(a.seed)
p = a.program
if p not in "ABCFG":
    sys.exit(f"program {p}: no PyTorch version")
(xtr, ytr), (xte, yte) = common.mnist_like(a.data_dir)
dataset = "fashion" if "fashion" in (a.data_dir or "") else "mnist"
shape = (-1, 1, 28, 28) if p in "CFG" else (-1, 784)
xtr, xte = torch.tensor(xtr).reshape(shape), torch.tensor(xte).reshape(shape)
ytr, yte = torch.tensor(ytr), torch.tensor(yte)

if p == "A":
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 128), nn.ReLU(), nn.Linear(128, 10))
elif p == "B":
    model = nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 10))
elif p == "F":
    # Keras's BatchNormalization defaults: ε = 1e-3, momentum 0.99 (PyTorch's momentum = 1 − it).
    model = nn.Sequential(nn.Conv2d(1, 16, 3), nn.BatchNorm2d(16, eps=1e-3, momentum=0.01),
                          nn.ReLU(), nn.MaxPool2d(2),
                          nn.Conv2d(16, 32, 3), nn.BatchNorm2d(32, eps=1e-3, momentum=0.01),
                          nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(32 * 5 * 5, 10))
elif p == "G":
    # Keras's 'same' padding for a 3×3 kernel at stride 1 is one pixel on every side.
    model = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.AvgPool2d(2),
                          nn.Conv2d(16, 32, 3, padding=1), nn.Tanh(),
                          nn.Conv2d(32, 32, 3), nn.Tanh(),
                          nn.AdaptiveMaxPool2d(1), nn.Flatten(), nn.Linear(32, 10))
else:
    model = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(32 * 13 * 13, 128), nn.ReLU(), nn.Linear(128, 10))
for m in model.modules():
    if isinstance(m, (nn.Linear, nn.Conv2d)):
        nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(m.bias)
if p == "B":
    opt = torch.optim.RMSprop(model.parameters(), lr=1e-3, alpha=0.9, eps=1e-7)
elif p == "G":
    # The same steps as Keras's SGD with Nesterov momentum at a constant rate (its velocity is
    # −lr times PyTorch's buffer).
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
else:
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, eps=1e-7)
batch = common.BATCH[p]
epochs = a.epochs or common.EPOCHS[p]
# F's rate falls along a cosine to zero over the run, stepped once per batch (Keras's CosineDecay).
steps = epochs * -(-len(xtr) // batch)
schedule = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if p == "F" else None
loss_fn = nn.CrossEntropyLoss()  # softmax + cross-entropy on logits, as the fused Keras loss


def evaluate():
    model.eval()
    with torch.no_grad():
        out = model(xte)
        return loss_fn(out, yte).item(), (out.argmax(1) == yte).float().mean().item()


times = []
for epoch in range(epochs):
    t = time.perf_counter()
    model.train()
    perm = torch.randperm(len(xtr))
    for i in range(0, len(xtr), batch):
        idx = perm[i : i + batch]
        opt.zero_grad()
        loss_fn(model(xtr[idx]), ytr[idx]).backward()
        opt.step()
        if schedule is not None:
            schedule.step()
    if p in "ACFG":  # validation each epoch, as the Keras programs
        evaluate()
    times.append(time.perf_counter() - t)
test_loss, test_acc = evaluate()
with torch.no_grad():
    rate = common.inference_rate(lambda b: model(b), xte)
common.report(p, dataset, a.seed, times, batch, a.threads, test_loss, test_acc, rate)
