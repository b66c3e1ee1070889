"""Grouping speaker embeddings: how many voices there are, and which window is whose.

The count comes from the voices, in two looks at the recording. First the plain embeddings: the windows are
over-clustered (spectral clustering into 12-20 groups, more than there are voices), then the two most
alike groups are merged while their centroids are at least SAME_VOICE alike. That separates voices from
different rooms and microphones, and keeps one voice whole across clips and emotions. When it finds one
voice, the recording gets a second look relative to itself: in one recording every voice shares the room,
the microphone and the line, so two parties can be as alike as one voice split in two (0.885 on the phone
call). The windows are centred on the recording's own mean voice and re-normalised, over-clustered the same
way, and groups are merged while their centred centroids point the same way (cosine above zero: the same
side of the mean), never when their plain centroids are below DIFFERENT_VOICES, and a group under
MIN_PARTY_WINDOWS joins its nearest. If that leaves exactly two groups in most of PARTY_VOTES draws of the
over-clustering, those are the parties (one voice split by centring mostly falls apart into several groups,
not two; a short one can split in two, so it asks for more; one draw alone flips on a borderline call).
In both looks a group too small to trust (MIN_WINDOWS, MIN_SHARE of the windows) joins its nearest
neighbour. A count outside the allowed range, or a fixed count, is clustered directly into that many groups
(spectral clustering, k-means on the leading eigenvectors). docs/speakers.md says what each setting was
chosen on.

Only windows that lie wholly inside speech are clustered when there are enough of them: a short burst's
window is its own fraction of a second repeated, good enough to say which voice it is nearest, too narrow
to found a voice on (clustering on them over-counts the assembled conversations). Only up to
MAX_POINTS windows are clustered (evenly picked, so a long recording costs no more than this); every window
is then given to its nearest centroid, twice, so the centroids reflect all of it.
"""

from __future__ import annotations

import numpy as np

MAX_POINTS = 600
PRUNE_FRACTION = 0.25  # neighbours kept per row of the affinity, as a share of the windows
SAME_VOICE = 0.74  # plain centroids at least this alike are one voice (d-vectors; docs/speakers.md)
SAME_SIDE = 0.0  # centred centroids: a positive cosine is the same side of the recording's mean voice
DIFFERENT_VOICES = 0.70  # plain centroids less alike than this are never merged (docs/speakers.md)
MIN_WINDOWS = 3  # a voice needs at least this many windows (about 2 s of speech) to be counted on its own
MIN_SHARE = 0.02  # ... and at least this share of the windows
MIN_PARTY_WINDOWS = 2 * MIN_WINDOWS  # the second look needs this much of each party (about 3.5 s of speech)
PARTY_VOTES = 9  # the second look's k-means draws; two parties when most of them say so
MAX_GROUPS = 20  # over-clustering never goes beyond this many groups


def cluster(
    vectors: np.ndarray,
    num: int | None,
    low: int | None,
    high: int | None,
    reliable: np.ndarray | None = None,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Labels (n,) and unit-norm centroids (k, d) for unit-norm `vectors` (n, d).

    `reliable` marks the windows to cluster on (the rest only take the nearest centroid), used when at least
    half of the windows, and six or more, are reliable."""
    n = vectors.shape[0]
    if n == 0:
        return np.zeros(0, dtype=int), np.zeros((0, vectors.shape[1]), dtype=np.float32)
    basis = np.arange(n)
    if reliable is not None and reliable.sum() >= max(6, n / 2):
        basis = np.flatnonzero(reliable)
    if basis.size > MAX_POINTS:
        basis = basis[np.linspace(0, basis.size - 1, MAX_POINTS).round().astype(int)]
    sample = vectors[basis]
    rng = np.random.default_rng(seed)

    low = max(1, low or 1)
    high = max(1, min(high or MAX_GROUPS, sample.shape[0]))
    if num is not None:
        low = high = max(1, min(num, sample.shape[0]))
    if low == high:
        labels = _fixed(sample, low, rng)
    else:
        labels = _estimated(sample, sample, rng, high, SAME_VOICE)
        if int(labels.max()) == 0 and high >= 2:
            parties = _two_parties(sample, rng, high)
            if parties is not None:
                labels = parties
        found = int(labels.max()) + 1
        if not low <= found <= high:
            labels = _fixed(sample, min(max(found, low), high), rng)
    centroids = _centroids(sample, labels, int(labels.max()) + 1)
    for _ in range(2):  # every window to its nearest voice, with centroids from all of them
        labels = np.argmax(vectors @ centroids.T, axis=1)
        centroids = _centroids(vectors, labels, centroids.shape[0])
    return _finish(vectors, labels)


def _fixed(x: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    if k <= 1 or x.shape[0] <= 2:
        return np.zeros(x.shape[0], dtype=int)
    return _kmeans(_spectral(x, k), k, rng)


def _two_parties(sample: np.ndarray, rng: np.random.Generator, high: int) -> np.ndarray | None:
    """The second look: two parties when most of PARTY_VOTES over-clusterings of the centred windows (each
    from its own k-means draw) leave exactly two groups once the groups under MIN_PARTY_WINDOWS have joined
    their nearest; the labels of the first such draw, else None."""
    centred = _centred(sample)
    found = []
    for _ in range(PARTY_VOTES):
        parties = _estimated(centred, sample, rng, high, SAME_SIDE, MIN_PARTY_WINDOWS)
        if int(parties.max()) == 1:
            found.append(parties)
    return found[0] if 2 * len(found) > PARTY_VOTES else None


def _centred(x: np.ndarray) -> np.ndarray:
    """Unit vectors relative to the recording's mean voice."""
    centred = x - x.mean(axis=0)
    return centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-9)


def _estimated(
    x: np.ndarray,
    plain: np.ndarray,
    rng: np.random.Generator,
    high: int,
    same: float,
    min_windows: int = MIN_WINDOWS,
) -> np.ndarray:
    """Labels with as many groups as there are voices: over-cluster the windows `x` (plain or centred), then
    merge groups of one voice (`plain`: the same windows as embedded; `same`: the merge threshold on x); a
    group under `min_windows` (or MIN_SHARE of the windows) joins its nearest."""
    n = x.shape[0]
    start = min(MAX_GROUPS, max(high, 12), n // max(MIN_WINDOWS, int(np.ceil(MIN_SHARE * n))))
    min_size = max(min_windows, int(np.ceil(MIN_SHARE * n)))
    if start <= 1:
        return np.zeros(n, dtype=int)
    labels = _kmeans(_spectral(x, start), start, rng)
    labels = np.argmax(x @ _centroids(x, labels, start).T, axis=1)
    return _finish(x, _merge(x, plain, labels, min_size, same))[0]


def _merge(x: np.ndarray, plain: np.ndarray, labels: np.ndarray, min_size: int, same: float) -> np.ndarray:
    """Merge the most alike pair while they sound like one voice; a group under min_size joins its nearest."""
    labels = labels.copy()
    while True:
        present = np.unique(labels)
        if present.size <= 1:
            return labels
        index = np.searchsorted(present, labels)
        sizes = np.bincount(index, minlength=present.size)
        sims = _similarities(_centroids(x, index, present.size))
        smallest = int(np.argmin(sizes))
        if sizes[smallest] < min_size:
            i, j = smallest, int(np.argmax(sims[smallest]))
        else:
            i, j = _one_voice_pair(sims, plain, index, present.size, same)
            if i < 0:
                return labels
        labels[labels == present[i]] = present[j]


def _one_voice_pair(
    sims: np.ndarray, plain: np.ndarray, index: np.ndarray, k: int, same: float
) -> tuple[int, int]:
    """The pair of groups most alike in `sims` above `same` whose plain centroids are not plainly two
    voices, or (-1, -1) when there is none."""
    alike = _similarities(_centroids(plain, index, k))
    candidates = np.where((sims > same) & (alike >= DIFFERENT_VOICES), sims, -np.inf)
    i, j = np.unravel_index(int(np.argmax(candidates)), candidates.shape)
    return (int(i), int(j)) if np.isfinite(candidates[i, j]) else (-1, -1)


def _similarities(centroids: np.ndarray) -> np.ndarray:
    sims = centroids @ centroids.T
    np.fill_diagonal(sims, -np.inf)
    return sims


def _spectral(x: np.ndarray, k: int) -> np.ndarray:
    """The k leading eigenvectors of the normalised Laplacian of pruned cosine affinities, rows unit-norm.

    Each row keeps its strongest PRUNE_FRACTION of neighbours (so the strong structure dominates and noise
    does not), then the affinity is symmetrised."""
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
    _, vecs = np.linalg.eigh(laplacian)
    embedding = vecs[:, :k]
    return embedding / np.maximum(np.linalg.norm(embedding, axis=1, keepdims=True), 1e-10)


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
    """Unit-norm mean of each group 0..k-1 that has members (empty groups are left out)."""
    out = []
    for j in range(k):
        members = x[labels == j]
        if members.size:
            mean = members.mean(axis=0)
            out.append(mean / max(float(np.linalg.norm(mean)), 1e-9))
    return np.array(out, dtype=np.float32).reshape(len(out), x.shape[1])


def centroids(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Unit-norm centroids of the groups 0..max(labels)."""
    return _centroids(x, labels, int(labels.max()) + 1 if labels.size else 0)


def _finish(x: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels renumbered 0..k-1 and their centroids."""
    _, dense = np.unique(labels, return_inverse=True)
    dense = dense.astype(int)
    return dense, _centroids(x, dense, int(dense.max()) + 1 if dense.size else 0)
