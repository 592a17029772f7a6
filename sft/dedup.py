"""Decontamination of curation queries against test splits: MinHash LSH on word n-grams, then a semantic pass.

Protects against: training on a test question reworded lightly (MinHash over lower-cased word/symbol n-grams,
`datasketch`'s LSH, each LSH hit confirmed by its estimated Jaccard similarity), or reworded with other words
for the same problem (cosine of mean-pooled last hidden states of an embedding model, with the same numbers and
operator symbols in the same order: embeddings barely see numbers, and a math question with other numbers is
another question). Does not protect against: a test question whose numbers were changed, or one translated.

    >>> shingles("Compute 93 + 76.", 3) == {"compute 93 +", "93 + 76", "+ 76 ."}
    True
    >>> math_signature("Tom has 5 apples and buys 3 more.")
    ('5', '3')
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

_WORDS = re.compile(r"\w+|[^\w\s]")
_MATH_TOKENS = re.compile(r"\d+(?:\.\d+)?|[-+*/^=×÷]")


@dataclass(frozen=True)
class Duplicate:
    """Query `query_index` duplicates test text `test_index`, found by `method` ("minhash" or "semantic")."""

    query_index: int
    test_index: int
    method: str
    similarity: float  # estimated Jaccard (minhash) or cosine (semantic)


def shingles(text: str, n: int) -> set[str]:
    """Lower-cased word/symbol n-grams of `text`; a text of fewer than `n` words is one shingle."""
    words = _WORDS.findall(text.lower())
    if len(words) <= n:
        return {" ".join(words)}
    return {" ".join(words[i : i + n]) for i in range(len(words) - n + 1)}


def math_signature(text: str) -> tuple[str, ...]:
    """The numbers and operator symbols of `text`, in order (what a semantic match must share)."""
    return tuple(_MATH_TOKENS.findall(text))


def _minhash(text: str, n: int, num_perm: int, seed: int):
    from datasketch import MinHash

    m = MinHash(num_perm=num_perm, seed=seed)
    m.update_batch([s.encode("utf-8") for s in shingles(text, n)])
    return m


def minhash_duplicates(queries: list[str], tests: list[str], *, ngram_words: int, threshold: float,
                       num_perm: int = 128, seed: int = 1) -> list[Duplicate]:
    """Queries whose estimated Jaccard similarity to some test text is at least `threshold` (the best match each).

    >>> [d.query_index for d in minhash_duplicates(["What is 2 + 3 + 4?", "Name a colour."],
    ...                                             ["what is 2 + 3 + 4 ?"], ngram_words=3, threshold=0.7)]
    [0]
    """
    from datasketch import MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    test_hashes = [_minhash(t, ngram_words, num_perm, seed) for t in tests]
    for i, m in enumerate(test_hashes):
        lsh.insert(str(i), m)
    found = []
    for q, text in enumerate(queries):
        m = _minhash(text, ngram_words, num_perm, seed)
        # LSH finds candidates near the threshold with some error either way: confirm each by its estimate
        scored = [(m.jaccard(test_hashes[int(key)]), int(key)) for key in lsh.query(m)]
        scored = [(sim, -t) for sim, t in scored if sim >= threshold]
        if scored:
            sim, neg_t = max(scored)
            found.append(Duplicate(q, -neg_t, "minhash", float(sim)))
    return found


def embed_texts(model_path: str, texts: list[str], *, batch_texts: int = 64, max_tokens: int = 256) -> np.ndarray:
    """Unit-norm mean-pooled last hidden states of `texts` (their first `max_tokens` tokens) under the backbone of
    the causal LM at `model_path`  # [N, H]

    Texts are embedded in order of length, so a batch pads little (test splits mix one-line questions with
    documents to summarise)."""
    import torch

    from core.model import load_checkpoint

    model, tokenizer = load_checkpoint(model_path)
    backbone = model.base_model.eval()  # hidden states only: no LM head over the vocabulary
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    out = np.zeros((len(texts), model.config.hidden_size), dtype=np.float32)
    order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
    with torch.no_grad():
        for start in range(0, len(order), batch_texts):
            batch = order[start : start + batch_texts]
            enc = tokenizer([texts[i] for i in batch], return_tensors="pt", padding=True, truncation=True,
                            max_length=max_tokens)
            hidden = backbone(**enc).last_hidden_state  # [B, T, H]
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)  # [B, H]
            out[batch] = torch.nn.functional.normalize(pooled.float(), dim=-1).numpy()
    return out


def semantic_duplicates(queries: list[str], tests: list[str], query_vecs: np.ndarray, test_vecs: np.ndarray, *,
                        threshold: float, require_same_numbers: bool = True) -> list[Duplicate]:
    """Queries whose cosine to some test text is at least `threshold` (and, with `require_same_numbers`, that
    share its `math_signature`); vectors are unit-norm rows (`embed_texts`).

    >>> v = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> [(d.query_index, d.test_index) for d in semantic_duplicates(["2 + 3", "2 + 4"], ["add 2 + 3", "x"], v, v,
    ...                                                              threshold=0.9)]
    [(0, 0)]
    """
    if not len(queries) or not len(tests):
        return []
    cosine = query_vecs @ test_vecs.T  # [Q, T]
    if require_same_numbers:
        by_signature: dict[tuple[str, ...], list[int]] = {}
        for t, text in enumerate(tests):
            by_signature.setdefault(math_signature(text), []).append(t)
        allowed = np.zeros(cosine.shape, dtype=bool)  # [Q, T]
        for q, text in enumerate(queries):
            allowed[q, by_signature.get(math_signature(text), [])] = True
        cosine = np.where(allowed, cosine, -np.inf)
    best = cosine.argmax(axis=1)  # [Q]
    return [Duplicate(q, int(best[q]), "semantic", float(cosine[q, best[q]]))
            for q in range(len(queries)) if cosine[q, best[q]] >= threshold]


def semantic_pass(queries: list[str], tests: list[str], *, model_path: str, threshold: float,
                  require_same_numbers: bool = True, batch_texts: int = 64, max_tokens: int = 256) -> list[Duplicate]:
    """`semantic_duplicates` with embeddings from `model_path`. With `require_same_numbers`, only the texts that
    can match are embedded (queries and tests whose `math_signature` the other side shares): a few out of
    thousands of test questions, which keeps the pass to seconds on a CPU."""
    q_index, t_index = list(range(len(queries))), list(range(len(tests)))
    if require_same_numbers:
        q_sigs, t_sigs = [math_signature(q) for q in queries], [math_signature(t) for t in tests]
        shared = set(q_sigs) & set(t_sigs)
        q_index = [i for i in q_index if q_sigs[i] in shared]
        t_index = [i for i in t_index if t_sigs[i] in shared]
    if not q_index or not t_index:
        return []
    vecs = embed_texts(model_path, [queries[i] for i in q_index] + [tests[i] for i in t_index],
                       batch_texts=batch_texts, max_tokens=max_tokens)
    found = semantic_duplicates([queries[i] for i in q_index], [tests[i] for i in t_index], vecs[: len(q_index)],
                                vecs[len(q_index):], threshold=threshold, require_same_numbers=require_same_numbers)
    return [Duplicate(q_index[d.query_index], t_index[d.test_index], d.method, d.similarity) for d in found]
