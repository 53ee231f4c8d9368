"""`LlamaSequences`: several sequences on one :class:`~export.llama.session.LlamaSession`, decoded together.

Sequence 0 is the session's own; :meth:`LlamaSequences.fork` makes sequences ``1 .. n-1`` copies of
it with ``llama_memory_seq_cp``, so a prefix (system prompt + image) prefilled once is shared by
every sequence without being recomputed or stored twice (the session's KV cache is unified). Each
:meth:`~LlamaSequences.eval_many` call then extends every sequence by its own tokens in one
``llama_decode`` batch, each at its own positions.

Example (two questions about one image)::

    session.eval_tokens(prefix_ids); session.eval_embeddings(image_features)
    seqs = LlamaSequences(session)
    seqs.fork(2)
    logits = seqs.eval_many([question_a_ids, question_b_ids])  # (2, vocab)
    logits = seqs.eval_many([[int(logits[0].argmax())], [int(logits[1].argmax())]])
    seqs.join(session.n_past)  # back to sequence 0 alone
"""

from __future__ import annotations

import numpy as np

from export.errors import ExportError
from export.llama.library import LlamaCppError, log_tail
from export.llama.session import LlamaSession, _BatchView


class LlamaSequences:
    """Sequences ``0 .. n-1`` of ``session``'s context (at most ``session.n_seq_max``).

    It drives the session's context directly (its ``llama_context`` and memory, like libmtmd
    borrows its model); the session must outlive it and is not evaluated on its own during a fork.
    """

    def __init__(self, session: LlamaSession) -> None:
        self.session = session
        self._lib = session._lib
        self.past: list[int] = []  # each sequence's next position during a fork
        self._batch = self._lib.llama_batch_init(session.n_batch, 0, 1)
        self._view = _BatchView(self._batch, session.n_batch, 0)

    def fork(self, n: int) -> None:
        """Make sequences ``1 .. n-1`` copies of sequence 0: they share its cells, nothing is recomputed."""
        s = self.session
        if not 1 <= n <= s.n_seq_max:
            raise ExportError(f"cannot fork {n} sequences: the context was made for 1 to {s.n_seq_max}")
        for seq in range(1, n):
            self._lib.llama_memory_seq_rm(s._mem, seq, -1, -1)
            self._lib.llama_memory_seq_cp(s._mem, 0, seq, -1, -1)
        self.past = [s.n_past] * n

    def eval_many(self, rows: list[list[int]]) -> np.ndarray:
        """Append token ids ``rows[s]`` to sequence ``s``, all in one ``llama_decode`` call (more only
        past ``n_batch`` tokens). Returns ``(k, vocab)``: the logits after the last token of each
        non-empty row, in row order."""
        if len(rows) != len(self.past):
            raise ExportError(f"{len(rows)} rows for {len(self.past)} sequences: fork first")
        lengths = [len(r) for r in rows]
        seqs = np.repeat(np.arange(len(rows), dtype=np.int32), lengths)
        pos = np.asarray([self.past[s] + j for s, n in enumerate(lengths) for j in range(n)], np.int32)
        ids = np.asarray([t for r in rows for t in r], np.int32)
        wanted = np.zeros(len(ids), np.int8)
        wanted[np.cumsum(lengths)[[s for s, n in enumerate(lengths) if n]] - 1] = 1
        out = np.empty((int(wanted.sum()), self.session.n_vocab), np.float32)
        done = 0
        for start in range(0, len(ids), self.session.n_batch):
            stop = min(start + self.session.n_batch, len(ids))
            self._decode(ids[start:stop], pos[start:stop], seqs[start:stop], wanted[start:stop])
            for i in np.flatnonzero(wanted[start:stop]).tolist():
                ptr = self._lib.llama_get_logits_ith(self.session._ctx, i)
                out[done] = np.ctypeslib.as_array(ptr, shape=(self.session.n_vocab,))
                done += 1
        self.past = [p + n for p, n in zip(self.past, lengths, strict=True)]
        self.session.n_past = self.past[0]
        return out

    def _decode(self, ids: np.ndarray, pos: np.ndarray, seqs: np.ndarray, wanted: np.ndarray) -> None:
        m = len(ids)
        view = self._view
        view.token[:m], view.pos[:m], view.logits[:m] = ids, pos, wanted
        for i, seq in enumerate(seqs.tolist()):
            self._batch.seq_id[i][0] = seq
        self._batch.n_tokens = m
        rc = self._lib.llama_decode(self.session._ctx, self._batch)
        if rc != 0:
            raise LlamaCppError(
                f"llama_decode of {m} tokens of {len(self.past)} sequences returned {rc}: {log_tail()}"
            )

    def join(self, n: int) -> None:
        """End a fork: drop sequences ``1 ..`` and keep the first ``n`` positions of sequence 0."""
        for seq in range(1, len(self.past)):
            self._lib.llama_memory_seq_rm(self.session._mem, seq, -1, -1)
        self.past = []
        self.session.truncate(n)

    def close(self) -> None:
        if self._batch is not None:
            self._lib.llama_batch_free(self._batch)
            self._batch = None
