"""Do generated digits look like digits? A number instead of an impression.

A small CNN classifier is trained on the digits a generator learnt from (never on its samples), and
then asked about each sample: a sample "reads as a digit" when the classifier gives one digit class a
probability of at least `threshold`. The same question on held-out real digits gives the reference
rate, and the class histogram of the samples shows whether all ten digits come out. The idea is the
Inception Score's (Salimans et al. 2016, arXiv:1606.03498: a classifier's confident, diverse
predictions on samples), reported here as readable figures instead of one exponentiated KL divergence.

A plain ten-class classifier is confidently wrong on junk (pixel-scrambled digits come out as "7"
with p > 0.9), so the classifier has an eleventh class, "no digit", trained on made-up negatives, as in
outlier exposure (Hendrycks et al. 2019, arXiv:1812.04606): digits with their pixels scrambled, with
their 4 x 4 grid of patches shuffled (strokes without a digit's layout), and two different digits overlaid.
Beside the rate, `frechet_distance` compares the classifier's penultimate features of samples and of
real digits (the Fréchet Inception Distance of Heusel et al. 2017, arXiv:1706.08500, with this small
network in Inception's place); it sees diversity and stroke quality, which a rate does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

__all__ = [
    "NO_DIGIT",
    "DigitScore",
    "digit_classifier",
    "digit_features",
    "frechet_distance",
    "no_digit_images",
    "score_digits",
    "train_digit_classifier",
]

NO_DIGIT = 10  # the eleventh class


def digit_classifier(size: int = 28) -> nn.Sequential:
    """LeNet-like CNN for `(B, 1, size, size)` digits in [0, 1] -> `(B, 11)` logits (0-9, then "no digit");
    everything but the last layer gives the 128 features of `digit_features`."""
    return nn.Sequential(
        nn.Conv2d(1, 32, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Dropout(0.3),
        nn.Linear(64 * (size // 4) ** 2, 128),
        nn.ReLU(),
        nn.Linear(128, 11),
    )


def no_digit_images(images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Made-up negatives from `(B, 1, S, S)` digits: a third pixel-scrambled, a third with their 4 x 4 grid of
    patches shuffled, a third overlaid (max) with a digit of another class (turned by 90° when the draw
    finds none)."""
    b, _, side, _ = images.shape
    out = images.clone()
    kind = torch.arange(b) % 3
    scrambled = kind == 0
    if scrambled.any():
        flat = out[scrambled].flatten(1)
        order = torch.argsort(torch.rand(flat.shape, generator=generator), dim=1)
        out[scrambled] = torch.gather(flat, 1, order).view(-1, 1, side, side)
    patched = kind == 1
    if patched.any() and side % 4 == 0:
        p, n = side // 4, 4
        tiles = out[patched].unfold(2, p, p).unfold(3, p, p).reshape(-1, n * n, p, p)  # (k, n*n, p, p)
        order = torch.argsort(torch.rand(tiles.shape[:2], generator=generator), dim=1)
        tiles = torch.gather(tiles, 1, order[:, :, None, None].expand_as(tiles))
        out[patched] = tiles.view(-1, n, n, p, p).permute(0, 1, 3, 2, 4).reshape(-1, 1, side, side)
    overlaid = kind == 2
    if overlaid.any():
        partner = torch.randint(0, b, (b,), generator=generator)
        other = labels[partner] != labels
        pick = overlaid & other
        out[pick] = torch.maximum(images[pick], images[partner[pick]])
        out[overlaid & ~other] = images[overlaid & ~other].flip(-2).flip(-1).transpose(-1, -2)  # turned 90°
    return out


def _shifted(x: torch.Tensor, generator: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Each image moved by up to `max_shift` pixels each way (zero fill): the classifier must not key on
    exact placement, which samples do not reproduce exactly."""
    padded = F.pad(x, [max_shift] * 4)
    side = x.shape[-1]
    out = torch.empty_like(x)
    offsets = torch.randint(0, 2 * max_shift + 1, (len(x), 2), generator=generator).tolist()
    for i, (dy, dx) in enumerate(offsets):
        out[i] = padded[i, :, dy : dy + side, dx : dx + side]
    return out


def train_digit_classifier(
    images: torch.Tensor, labels: torch.Tensor, *, steps: int = 600, batch_size: int = 64, seed: int = 0
) -> nn.Module:
    """Train `digit_classifier` on `(N, 1, S, S)` images in [0, 1] and `(N,)` labels 0-9 (Adam 1e-3,
    random shifts of up to 2 pixels), and on a quarter as many `no_digit_images` per batch labelled
    `NO_DIGIT`. Returns the classifier in eval mode."""
    if images.ndim != 4 or images.shape[1] != 1 or len(images) != len(labels) or len(images) == 0:
        raise ValueError(
            f"expected images (N, 1, S, S) and labels (N,) with N > 0, got {tuple(images.shape)} and "
            f"{tuple(labels.shape)}"
        )
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = digit_classifier(images.shape[-1])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    for _ in range(steps):
        index = torch.randint(0, len(images), (batch_size,), generator=generator)
        x, y = images[index], labels[index].long()
        k = batch_size // 4
        negatives = no_digit_images(x[:k], y[:k], generator)
        x = torch.cat([_shifted(x, generator), negatives])
        y = torch.cat([y, torch.full((k,), NO_DIGIT, dtype=torch.long)])
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    return model.eval()


@dataclass
class DigitScore:
    """What `score_digits` returns.

    Attributes:
        confident: share of the images whose most likely class is a digit with probability >= `threshold`.
        threshold: that probability.
        counts: `(10,)` how many of the confident images went to each digit.
        classes_seen: how many digits hold at least one confident image.
        no_digit: share of the images whose most likely class is "no digit".
        mean_confidence: mean of the top-class probability over all images.
        predicted: `(N,)` the top class of every image (`NO_DIGIT` = 10 for "no digit").
    """

    confident: float
    threshold: float
    counts: list[int]
    classes_seen: int
    no_digit: float
    mean_confidence: float
    predicted: list[int]


@torch.no_grad()
def score_digits(classifier: nn.Module, images: torch.Tensor, threshold: float = 0.9) -> DigitScore:
    """Ask `classifier` about `(N, 1, S, S)` images in [0, 1]; see `DigitScore`."""
    if not 0 < threshold < 1:
        raise ValueError(f"`threshold` must be in (0, 1), got {threshold!r}")
    if images.ndim != 4 or images.shape[1] != 1 or len(images) == 0:
        raise ValueError(f"expected images of shape (N, 1, S, S) with N > 0, got {tuple(images.shape)}")
    classifier.eval()
    probs = torch.cat([F.softmax(classifier(chunk.float()), dim=1) for chunk in images.split(256)])
    top, predicted = probs.max(dim=1)
    sure = (top >= threshold) & (predicted != NO_DIGIT)
    counts = torch.bincount(predicted[sure], minlength=10)
    return DigitScore(
        confident=sure.float().mean().item(),
        threshold=threshold,
        counts=counts.tolist(),
        classes_seen=int((counts > 0).sum()),
        no_digit=(predicted == NO_DIGIT).float().mean().item(),
        mean_confidence=top.mean().item(),
        predicted=predicted.tolist(),
    )


@torch.no_grad()
def digit_features(classifier: nn.Sequential, images: torch.Tensor) -> torch.Tensor:
    """`(N, 1, S, S)` -> `(N, 128)`: the classifier's penultimate activations."""
    classifier.eval()
    return torch.cat([classifier[:-1](chunk.float()) for chunk in images.split(256)]).double()


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """`||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))` between Gaussians fitted to two `(N, D)`
    feature sets (Heusel et al. 2017). It is biased upwards for small N: compare only figures computed
    with the same N. `1e-6 I` is added to both covariances, since ReLU features that are never active make
    them singular."""
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"expected two (N, D) feature sets with N >= 2, got {tuple(a.shape)} and {tuple(b.shape)}")
    from scipy import linalg

    mu_a, mu_b = a.double().mean(0).numpy(), b.double().mean(0).numpy()
    eye = torch.eye(a.shape[1], dtype=torch.float64) * 1e-6
    cov_a, cov_b = (torch.cov(a.T.double()) + eye).numpy(), (torch.cov(b.T.double()) + eye).numpy()
    root = linalg.sqrtm(cov_a @ cov_b)
    root = root.real if hasattr(root, "real") else root
    return float(((mu_a - mu_b) ** 2).sum() + cov_a.trace() + cov_b.trace() - 2 * root.trace())
