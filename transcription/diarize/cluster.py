"""Grouping speaker embeddings: spectral clustering with an eigengap speaker count, then centroids.

Affinities are cosine similarities, each row pruned to its strongest neighbours (so that one loud
similarity structure dominates and noise does not) and symmetrised. The number of speakers is where the
normalised Laplacian's eigenvalues jump most, within the allowed range; k-means on the leading eigenvectors
gives the groups. Only up to MAX_POINTS windows are clustered (evenly picked, so a long recording costs no
more than this); every window is then given to its nearest centroid, twice, so centroids reflect all of it.
Groups whose centroids are nearly the same voice are merged (one speaker recorded in two moods or rooms).
"""

from __future__ import annotations

import numpy as np

MAX_POINTS = 600
PRUNE_FRACTION = 0.25  # neighbours kept per row, as a share of the windows
SAME_VOICE = 0.70  # centroids this similar are one speaker (d-vectors; measured in docs/speakers.md)


def cluster(
    vectors: np.ndarray, num: int | None, low: int | None, high: int | None, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Labels (n,) and unit-norm centroids (k, d) for unit-norm `vectors` (n, d)."""
    n = vectors.shape[0]
    if n == 0:
        return np.zeros(0, dtype=int), np.zeros((0, vectors.shape[1]), dtype=np.float32)
    low = max(1, low or 1)
    high = min(high or 20, n)
    if num is not None:
        low = high = min(num, n)
    if n <= 2 or high <= 1:
        return _finish(vectors, np.zeros(n, dtype=int))
    rng = np.random.default_rng(seed)
    pick = np.linspace(0, n - 1, MAX_POINTS).round().astype(int) if n > MAX_POINTS else np.arange(n)
    sample = vectors[pick]
    k, embedding = _spectral(sample, low, high)
    labels = _kmeans(embedding, k, rng)
    centroids = _centroids(sample, labels, k)
    for _ in range(2):  # every window to its nearest voice, with centroids from all of them
        labels = np.argmax(vectors @ centroids.T, axis=1)
        centroids = _centroids(vectors, labels, centroids.shape[0])
    if num is None:
        labels = _merge_same_voice(vectors, labels, low)
    return _finish(vectors, labels)


def _spectral(x: np.ndarray, low: int, high: int) -> tuple[int, np.ndarray]:
    sim = np.clip(x @ x.T, 0.0, 1.0)
    n = sim.shape[0]
    keep = max(2, int(np.ceil(PRUNE_FRACTION * n)))
    pruned = np.zeros_like(sim)
    top = np.argpartition(-sim, keep - 1, axis=1)[:, :keep]
    rows = np.arange(n)[:, None]
    pruned[rows, top] = sim[rows, top]
    affinity = (pruned + pruned.T) / 2
    np.fill_diagonal(affinity, 0.0)
    degree = affinity.sum(axis=1)
    inv = 1.0 / np.sqrt(np.maximum(degree, 1e-10))
    laplacian = np.eye(n) - inv[:, None] * affinity * inv[None, :]
    values, vecs = np.linalg.eigh(laplacian)
    # One speaker is not decided here (the eigengap of a single voice is noise): at least two groups are
    # formed, and groups of one voice are merged afterwards by centroid similarity.
    low = max(2, low)
    if low >= high:
        k = high
    else:
        gaps = np.diff(values[: high + 1])  # gaps[i]: between eigenvalue i and i + 1 -> i + 1 groups
        k = int(np.argmax(gaps[low - 1 : high]) + low)
    embedding = vecs[:, :k]
    norms = np.linalg.norm(embedding, axis=1, keepdims=True)
    return k, embedding / np.maximum(norms, 1e-10)


def _kmeans(x: np.ndarray, k: int, rng: np.random.Generator, rounds: int = 8) -> np.ndarray:
    """k-means++ with restarts; the lowest inertia wins."""
    best, best_inertia = np.zeros(x.shape[0], dtype=int), np.inf
    for _ in range(rounds):
        centres = [x[rng.integers(x.shape[0])]]
        for _ in range(1, k):
            d = np.min(((x[:, None, :] - np.array(centres)[None]) ** 2).sum(-1), axis=1)
            total = d.sum()
            centres.append(
                x[rng.choice(x.shape[0], p=d / total)] if total > 0 else x[rng.integers(x.shape[0])]
            )
        c = np.array(centres)
        for _ in range(50):
            labels = np.argmin(((x[:, None, :] - c[None]) ** 2).sum(-1), axis=1)
            new = np.array([x[labels == j].mean(axis=0) if np.any(labels == j) else c[j] for j in range(k)])
            if np.allclose(new, c):
                break
            c = new
        inertia = float(((x - c[labels]) ** 2).sum())
        if inertia < best_inertia:
            best, best_inertia = labels, inertia
    return best


def _centroids(x: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    out = []
    for j in range(k):
        members = x[labels == j]
        if members.size:
            mean = members.mean(axis=0)
            out.append(mean / max(float(np.linalg.norm(mean)), 1e-9))
    return np.array(out, dtype=np.float32).reshape(len(out), x.shape[1])


def _merge_same_voice(x: np.ndarray, labels: np.ndarray, low: int) -> np.ndarray:
    labels = labels.copy()
    while True:
        present = [int(j) for j in np.unique(labels)]
        if len(present) <= low:
            return labels
        c = _centroids(x, labels, max(present) + 1)  # rows follow `present` (empty groups are left out)
        sims = c @ c.T
        np.fill_diagonal(sims, -1.0)
        i, j = np.unravel_index(int(np.argmax(sims)), sims.shape)
        if sims[i, j] < SAME_VOICE:
            return labels
        labels[labels == present[j]] = present[i]


def _finish(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels renumbered 0..k-1 and their centroids."""
    _, dense = np.unique(labels, return_inverse=True)
    dense = dense.astype(int)
    return dense, _centroids(x, dense, int(dense.max()) + 1 if dense.size else 0)
