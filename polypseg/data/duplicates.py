"""Same-frame copies inside a dataset, found even when re-cropped and re-sized.

Kvasir-SEG holds copies of one endoscope frame cut and scaled differently (``cjyz…``/``cjz…`` of
``cju…``); hashes miss them, and a split that puts the two on both sides leaks test images into
training. Each image is reduced to ORB keypoints (OpenCV) on a 320 px greyscale copy with the
overlay corners masked (the position-marker thumbnail and text bands are the same in unrelated
frames); candidate pairs come from one brute-force Hamming match of every image's strongest
descriptors against all others; a candidate is a copy when a similarity transform (crop + scale,
RANSAC) explains at least ``min_inliers`` matches. On Kvasir-SEG: 18 of the 18 confirmed pairs, no
other pair, in about a minute on 2 cores (``docs/benchmarks.md``).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

SIDE = 320
"""Longest side the keypoints are found at."""
MIN_INLIERS = 80
"""RANSAC inliers that make a copy (Kvasir-SEG: true pairs 150 to 359, other pairs at most 53)."""


def _overlay_mask(height: int, width: int) -> np.ndarray:
    """Where keypoints may come from: not the lower-left marker thumbnail, not the border bands."""
    mask = np.full((height, width), 255, np.uint8)
    mask[int(height * 0.6) :, : int(width * 0.35)] = 0
    mask[: int(height * 0.12)] = 0
    mask[int(height * 0.92) :] = 0
    mask[:, : int(width * 0.05)] = 0
    mask[:, int(width * 0.95) :] = 0
    return mask


def frame_features(path: str | Path, keypoints: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """ORB keypoint positions (N, 2) and descriptors (N, 32), strongest first."""
    gray = cv2.imread(str(path), cv2.IMREAD_REDUCED_GRAYSCALE_2)
    if gray is None:
        raise ValueError(f"{path}: not an image OpenCV can read")
    scale = SIDE / max(gray.shape)
    gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    orb = cv2.ORB_create(nfeatures=keypoints, fastThreshold=10)
    found, descriptors = orb.detectAndCompute(gray, _overlay_mask(*gray.shape))
    order = np.argsort([-k.response for k in found]) if found else np.array([], int)
    points = np.array([found[i].pt for i in order], np.float32).reshape(-1, 2)
    if descriptors is None:
        return points, np.zeros((0, 32), np.uint8)
    return points, descriptors[order]


def candidate_pairs(
    descriptors: Sequence[np.ndarray], strongest: int = 120, min_votes: int = 8
) -> list[tuple[int, int]]:
    """Image pairs sharing at least ``min_votes`` close descriptors (Hamming < 40)."""
    train = np.concatenate([d[:strongest] for d in descriptors])
    owner = np.concatenate([np.full(len(d[:strongest]), i) for i, d in enumerate(descriptors)])
    matcher, votes = cv2.BFMatcher(cv2.NORM_HAMMING), {}
    for i, d in enumerate(descriptors):
        if len(d) < 2:
            continue
        for matches in matcher.knnMatch(d[:strongest], train, k=6):
            for m in matches:
                j = int(owner[m.trainIdx])
                if j != i and m.distance < 40:
                    key = (min(i, j), max(i, j))
                    votes[key] = votes.get(key, 0) + 1
    return sorted(k for k, v in votes.items() if v >= min_votes)


def inliers(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> int:
    """Matches a crop + scale (similarity, RANSAC) maps from frame ``a`` onto frame ``b``."""
    matches = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(a[1], b[1], k=2)
    good = [
        m for m, n in (pair for pair in matches if len(pair) == 2) if m.distance < 0.8 * n.distance
    ]
    if len(good) < 12:
        return 0
    source = a[0][[g.queryIdx for g in good]]
    target = b[0][[g.trainIdx for g in good]]
    model, mask = cv2.estimateAffinePartial2D(
        source, target, method=cv2.RANSAC, ransacReprojThreshold=4.0
    )
    return 0 if model is None else int(mask.sum())


def same_frame_pairs(
    paths: Sequence[str | Path], min_inliers: int = MIN_INLIERS
) -> list[tuple[int, int, int]]:
    """``(i, j, inliers)`` for every pair of ``paths`` that shows the same frame.

    Example:
        >>> same_frame_pairs(sorted(Path("kvasir-seg/images").glob("*.jpg")))  # doctest: +SKIP
        [(12, 918, 214), ...]
    """
    features = [frame_features(p) for p in paths]
    found = []
    for i, j in candidate_pairs([d for _, d in features]):
        count = inliers(features[i], features[j])
        if count >= min_inliers:
            found.append((i, j, count))
    return found


def groups(count: int, pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """Group id per item (union-find): items joined by a pair, directly or through others,
    share one id (the smallest index of the group)."""
    parent = list(range(count))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j, *_ in pairs:
        a, b = find(i), find(j)
        parent[max(a, b)] = min(a, b)
    return np.array([find(i) for i in range(count)])
