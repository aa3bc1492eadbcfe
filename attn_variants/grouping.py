"""Static uneven grouping for GQA: which KV head each query head reads, fixed at uptraining.

GQA (arXiv 2305.13245) groups neighbours: query head i reads KV head i // (h/g). QCQA (Joshi et
al. 2024, arXiv 2406.10247) and AsymGQA (Chen et al. 2024, arXiv 2406.14963) choose the groups
instead, sizes free, when an MHA checkpoint is converted: a grouping is a tuple of h KV-head ids.

The fused plan (`GroupLayout`): KV heads ordered by group size, each one's query heads next to
each other. Within one size class s the heads are a plain GQA (k KV heads, s*k query heads), so
attention is one backend call per distinct group size, on a slice of the cache (no copy).

Choosing a grouping (`choose`) minimises the squared distance of each head's features to its
group's mean: with weights as features that is QCQA's weight-sharing error (the cost of
mean-pooling K/V projections); with a calibration batch's keys and values it is the error
mean-pooling makes on those activations (pooled projections give the group's mean keys).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

N_STARTS = 8  # k-means++ starts besides the neighbour grouping; the best local optimum is kept


def contiguous(h: int, g: int) -> tuple[int, ...]:
    """GQA's neighbour grouping: query head i reads KV head i // (h/g)."""
    return tuple(i // (h // g) for i in range(h))


def parse(grouping: object, h: int, g: int) -> tuple[int, ...]:
    """A grouping as h ints in [0, g), every KV head read by at least one query head. Text
    '0-0-1-2' (the CLI's `gqa:grouping=0-0-1-2`) is read as (0, 0, 1, 2)."""
    if isinstance(grouping, str):
        try:
            grouping = tuple(int(part) for part in grouping.split("-"))
        except ValueError:
            raise ValueError(
                f"grouping={grouping!r} is not KV-head ids joined by '-', e.g. '0-0-1-2'"
            ) from None
    if isinstance(grouping, int) and not isinstance(grouping, bool):
        grouping = (grouping,)
    ids = tuple(int(i) for i in grouping) if isinstance(grouping, Sequence | Tensor) else None
    if ids is None or len(ids) != h or any(not 0 <= i < g for i in ids):
        raise ValueError(
            f"grouping={grouping!r} must give each of the h={h} query heads a KV head in [0, {g})"
        )
    unread = sorted(set(range(g)) - set(ids))
    if unread:
        raise ValueError(f"grouping={ids} leaves KV head(s) {unread} with no query head (g={g})")
    return ids


@dataclass(frozen=True)
class GroupLayout:
    """The fused plan of a grouping: query heads in `q_order` read KV heads in `kv_order` as a
    GQA per size class; `classes` holds (group size, KV heads of that size) in that order."""

    q_order: tuple[int, ...]
    kv_order: tuple[int, ...]
    classes: tuple[tuple[int, int], ...]

    @classmethod
    def of(cls, grouping: Sequence[int], g: int) -> GroupLayout:
        members = [[i for i, j in enumerate(grouping) if j == kv] for kv in range(g)]
        kv_order = tuple(sorted(range(g), key=lambda kv: (len(members[kv]), kv)))
        sizes = [len(members[kv]) for kv in kv_order]
        classes = tuple((s, sizes.count(s)) for s in sorted(set(sizes)))
        return cls(tuple(i for kv in kv_order for i in members[kv]), kv_order, classes)

    @property
    def q_inverse(self) -> tuple[int, ...]:
        """Where each query head sits in `q_order` (to put the outputs back in head order)."""
        inverse = [0] * len(self.q_order)
        for pos, head in enumerate(self.q_order):
            inverse[head] = pos
        return tuple(inverse)


def group_error(gram: Tensor, grouping: Sequence[int], g: int) -> float:
    """sum over groups G of sum_{i in G} ||f_i - mean_G f||^2, from the Gram matrix (h, h) of
    the features: trace(K_GG) - sum(K_GG) / |G|."""
    gram = gram.detach()
    onehot = _onehot(grouping, g, gram)  # (h, g)
    sizes = onehot.sum(0)  # (g,)
    total = (onehot * (gram @ onehot)).sum(0)  # (g,) sum_{i,j in G} K_ij
    return float(gram.diagonal().sum() - (total / sizes).sum())


def choose(features: Tensor, g: int, seed: int = 0) -> tuple[int, ...]:
    """The grouping of the h rows of `features` (h, f) into g non-empty groups with the least
    `group_error`: single-head moves from the neighbour grouping and from N_STARTS k-means++
    seeds (seeded), each until no move lowers the error. Labels are canonical: KV heads are
    numbered in the order of their first query head, so head 0 reads KV head 0."""
    feats = features.detach().double().flatten(1)  # (h, f)
    gram = feats @ feats.T  # (h, h)
    h = gram.shape[0]
    if not 1 <= g <= h:
        raise ValueError(f"cannot group h={h} heads into g={g} KV heads")
    generator = torch.Generator().manual_seed(seed)
    starts = [contiguous(h, g)] if h % g == 0 else []
    starts += [_kmeans_pp(gram, g, generator) for _ in range(N_STARTS)]
    best = min((_local_search(gram, list(s), g) for s in starts), key=lambda s: group_error(gram, s, g))
    return _canonical(best)


def _onehot(grouping: Sequence[int], g: int, like: Tensor) -> Tensor:
    index = torch.as_tensor(list(grouping), device=like.device)
    return torch.nn.functional.one_hot(index, g).to(like.dtype)  # (h, g)


def _kmeans_pp(gram: Tensor, g: int, generator: torch.Generator) -> list[int]:
    """k-means++ seeds in feature space (distances from the Gram matrix), each head to its nearest
    seed; a seed duplicated by an identical head still keeps its own group."""
    h = gram.shape[0]
    diag = gram.diagonal()
    dist = diag[:, None] + diag[None, :] - 2 * gram  # (h, h) squared distances
    centers = [int(torch.randint(h, (1,), generator=generator))]
    for _ in range(g - 1):
        d2 = dist[:, centers].min(1).values.clamp_min(0)  # (h,)
        weights = d2 if d2.sum() > 0 else torch.ones(h, dtype=d2.dtype)
        weights[centers] = 0
        centers.append(int(torch.multinomial(weights, 1, generator=generator)))
    labels = dist[:, centers].argmin(1).tolist()
    for k, c in enumerate(centers):
        labels[c] = k
    return labels


def _local_search(gram: Tensor, labels: list[int], g: int) -> list[int]:
    """Move one head at a time to the group that lowers the error most, keeping every group
    non-empty, until no move helps (each move lowers the error, so it ends)."""
    diag = gram.diagonal()
    for _ in range(64 * len(labels)):
        onehot = _onehot(labels, g, gram)  # (h, g)
        sizes, s = onehot.sum(0), gram @ onehot  # (g,), (h, g): S_iG = sum_{j in G} K_ij
        totals = (onehot * s).sum(0)  # (g,)
        err = totals / sizes  # the -sum/|G| part per group; trace terms cancel in a move
        own = torch.as_tensor(labels)
        h = len(labels)
        t_a, n_a, s_a = totals[own], sizes[own], s[torch.arange(h), own]  # (h,) each
        leave = (t_a - 2 * s_a + diag) / (n_a - 1).clamp_min(1) - err[own]  # (h,)
        join = (totals + 2 * s + diag[:, None]) / (sizes + 1) - err  # (h, g)
        gain = leave[:, None] + join  # (h, g): how much sum/|G| grows; the error falls by it
        gain[torch.arange(h), own] = 0
        gain[n_a == 1] = 0  # a head alone in its group stays: every KV head keeps a query head
        best = int(gain.argmax())
        if gain.flatten()[best] <= 1e-12 * float(diag.sum().abs() + 1):
            return labels
        labels[best // g] = best % g
    return labels


def _canonical(labels: Sequence[int]) -> tuple[int, ...]:
    order: dict[int, int] = {}
    for label in labels:
        order.setdefault(label, len(order))
    return tuple(order[label] for label in labels)
