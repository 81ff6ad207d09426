"""Proof building for a ledger: inclusion proofs of entries (:meth:`Prover.prove_entry`,
:meth:`~Prover.prove_entry_at`, :meth:`~Prover.prove_entries`, :meth:`~Prover.find_and_prove`)
and consistency proofs between states (:meth:`~Prover.prove_consistency`).

A :class:`Prover` reads through a :class:`kvcore.proofsource.ProofSource` (each transaction's
header, its stored entries tree in ``extra``, its payload's bytes, the ledger tree's subtree
hashes) and keeps the caches that make proofs fast. In storage format 2 ``extra`` holds the
entries tree from level 4 up: a node below is recomputed from its block of 16 entries of the
payload (:meth:`Prover._block`, :mod:`kvcore.runs`). :class:`kvcore.ledger.Ledger` owns one
and delegates its proof methods to it. The proofs are verified by :mod:`kvcore.verify`.
"""

from __future__ import annotations

import struct
import threading
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Callable, Iterable

from kvcore import merkle, payload, payload_v2
from kvcore.codec import V1, Codec
from kvcore.errors import InvalidInputError, KeyNotFoundError, TxNotFoundError, VerificationError
from kvcore.errors import corrupt_entry as _corrupt
from kvcore.hashing import HASH_SIZE, KIND_DELETE
from kvcore.keyindex import bound_for, ordinal_of, tx_of
from kvcore.limits import check_key, check_tx
from kvcore.models import ConsistencyProof, EntriesProof, EntryProof, State, TxHeader
from kvcore.proofsource import ProofSource
from kvcore.runs import block_of, positions_table, read_run
from kvcore.tree import level_starts, subtree_hash

_ENTRY_HEAD_SIZE = payload.ENTRY_HEAD_SIZE
_unpack_entry_head = payload.ENTRY_HEAD.unpack_from
_EXTRA_CACHE_BYTES = 64 * 1024 * 1024  # entries-tree bytes kept in memory for fast proofs

_Extra = tuple[bytes, dict[tuple[int, int], bytes], list[int]]
"""A transaction's ``extra`` in memory: its bytes, a memo of its entries tree's partial
subtree hashes, and where each level of that tree starts (:func:`kvcore.tree.level_starts`)."""


class ExtraCache(OrderedDict[int, _Extra]):
    """Transactions' ``extra`` in memory by transaction id, least recently used first;
    ``nbytes`` is the size of the bytes held (kept within _EXTRA_CACHE_BYTES by the prover),
    and :meth:`clear` resets it with the rest."""

    nbytes = 0

    def clear(self) -> None:
        super().clear()
        self.nbytes = 0


class Prover:
    """Builds the proofs of the ledger ``source`` reads (see :class:`ProofSource`).

    It owns its caches, all of things that never change once committed (so they are bounded,
    never invalidated): transactions' ``extra`` (:attr:`extra_cache`, within
    _EXTRA_CACHE_BYTES; the ledger's reads of runs of entries use it too, through
    :meth:`extra`), the upper parts of entry paths, the top levels of entries trees, partial
    subtree hashes, transaction paths, where a key suffix was last found in a run
    (:meth:`find_and_prove`) and the last state it checked.

    Its caller checks that the ledger is open before each call (a prover knows nothing of
    closing). Many threads may prove at once.
    """

    def __init__(self, source: ProofSource, codec: Codec = V1) -> None:
        """A prover of the ledger ``source`` reads, whose transactions are stored in the
        format of ``codec`` (which entries-tree levels ``extra`` holds, how entries decode)."""
        self._source = source
        self._codec = codec
        self._low = codec.stored_from  # levels below are recomputed from the payload
        self._blocks: dict[tuple[int, int], bytes] = {}
        self.erased: dict[tuple[int, int], bytes] = {}
        """Leaves of erased entries, by (transaction, index): kvcore.erasure."""
        self.extra_cache = ExtraCache()
        self._extra_lock = threading.Lock()
        self._path_uppers: dict[tuple[int, int], tuple[bytes, ...]] = {}
        self._path_tops: dict[int, bytes] = {}
        self._partials: dict[tuple[int, int], bytes] = {}
        self._tx_paths: dict[tuple[int, int], tuple[bytes, ...]] = {}
        self._run_hints: dict[bytes, int] = {}  # key suffix -> its run ordinal at its last match
        self._checked: State | None = None  # the last state _resolve_state found to be the ledger's

    def clear_caches(self) -> None:
        """Forget everything cached (the next proofs read from the source again)."""
        self.extra_cache.clear()
        self._path_uppers.clear()
        self._path_tops.clear()
        self._partials.clear()
        self._tx_paths.clear()
        self._blocks.clear()
        self._run_hints.clear()
        self._checked = None

    def _resolve_state(self, state: State | None, at_least: int) -> State:
        """``state`` (default: the current state) once it is known to be the ledger's state
        at a transaction from ``at_least`` on (the last one found so is remembered for
        :meth:`find_and_prove`)."""
        if state is None:
            return self._source.state()
        if not isinstance(state, State):
            raise InvalidInputError(f"state must be a State, got {type(state).__name__}")
        count = self._source.tx_id
        if not at_least <= state.tx_id <= count:
            raise TxNotFoundError(
                f"state {state.tx_id} cannot prove transaction {at_least} "
                f"(the ledger is at {count})"
            )
        if self._source.state(state.tx_id).root != state.root:
            raise VerificationError(
                f"the given state's root is not this ledger's root at transaction {state.tx_id}"
            )
        if type(state) is State:
            self._checked = state
        return state

    def prove_entry(
        self, key: bytes, tx_id: int | None = None, state: State | None = None
    ) -> EntryProof:
        """:meth:`kvcore.Ledger.prove_entry`: the entry ``key`` got in ``tx_id`` (default:
        its newest), relative to ``state`` (default: the current state)."""
        key = check_key(key)
        src = self._source
        locs = src.key_locations(key)
        count = src.tx_id
        bound = bound_for(count)
        locs = [loc for loc in locs if loc < bound]
        if tx_id is None:
            if not locs:
                raise KeyNotFoundError(f"key {key!r} not found")
            loc = locs[-1]
        else:
            check_tx(tx_id, count)
            i = bisect_left(locs, tx_id << 56)
            if i == len(locs) or tx_of(locs[i]) != tx_id:
                raise KeyNotFoundError(f"key {key!r} has no entry in transaction {tx_id}")
            loc = locs[i]
        kind = src.entry_kind(loc, key)
        proof = self.prove_entry_at(tx_of(loc), ordinal_of(loc), state)
        return proof._replace(deleted=kind == KIND_DELETE)

    def prove_entry_at(self, tx_id: int, index: int, state: State | None = None) -> EntryProof:
        """:meth:`kvcore.Ledger.prove_entry_at`: entry number ``index`` of ``tx_id``."""
        header = self._source.header(tx_id)  # TxNotFoundError first
        n = header.n_entries
        if type(index) is not int or not 0 <= index < n:
            raise InvalidInputError(f"transaction {tx_id} has no entry {index!r} ({n} entries)")
        state = self._resolve_state(state, tx_id)
        blob = self._proof_extra(tx_id, n)
        raw = blob[4 * index : 4 * index + 4] if blob is not None else self._source.extra_bytes(tx_id, 4 * index, 4)
        if len(raw) != 4:
            raise _corrupt(tx_id, b"<entries tree>")
        deleted = self._source.payload_bytes(tx_id, int.from_bytes(raw, "big"), 1) == b"\x01"
        return EntryProof(
            header, index, deleted, self._entry_path(tx_id, n, index, blob), self._tx_path(tx_id, state.tx_id),
            state.tx_id,
        )

    def _proof_extra(self, tx_id: int, n: int) -> bytes | None:
        """A transaction's ``extra`` for a proof: from the cache, or loaded into it while it has
        room; None (the caller reads only what it needs) rather than evicting another's: a
        proof needs ~log2(n) of its nodes, so random proofs over more transactions than fit
        must not thrash the cache reading whole entries trees."""
        hit = self.extra_cache.get(tx_id)
        if hit is not None:
            return hit[0]
        size = self._codec.extra_size(n)
        if self.extra_cache.nbytes + size > _EXTRA_CACHE_BYTES:
            return None
        return self._extra_entry(tx_id, n)[0]

    def find_and_prove(
        self, tx_id: int, first: int, count: int, key_len: int, key_suffix: bytes, state: State | None
    ) -> tuple[int, bytes, EntryProof] | None:
        """:meth:`kvcore.Ledger.find_and_prove`: find and prove the entry among entries
        ``first .. first+count-1`` of ``tx_id`` whose key is ``key_len`` bytes long and ends
        with ``key_suffix``.

        The entry at the run ordinal where ``key_suffix`` last matched is read alone and tried
        first (runs written alike tend to share their layout); else the run is read at once and
        only the entries' heads and candidate keys are looked at (the first match wins).
        """
        header = self._source.header(tx_id)  # TxNotFoundError first
        n = header.n_entries
        if type(first) is not int or type(count) is not int or first < 0 or count < 0 or first + count > n:
            raise InvalidInputError(f"entries {first}..{first + count - 1} are outside transaction {tx_id} ({n} entries)")
        if not (type(state) is State and state == self._checked and tx_id <= state.tx_id):
            state = self._resolve_state(state, tx_id)  # not the state last checked: check it
        if count == 0:
            return None
        read = self._source.payload_bytes
        suffix = key_suffix
        blob = self._proof_extra(tx_id, n)
        cut, head = len(suffix), _ENTRY_HEAD_SIZE
        hint = self._run_hints.get(suffix, 0)
        coded = self._codec.restart != 1
        if coded and hint < count and self._low and (tx_id, (first + hint) >> self._low) not in self._blocks:
            # the entry where the last match was, from its block, which its proof needs too
            i = first + hint
            entries = self._block_entries(tx_id, n, i >> self._low, blob)
            kind, key, value = entries[i & ((1 << self._low) - 1)]
            if len(key) == key_len and key.endswith(suffix):
                return None if kind == KIND_DELETE else (i, value, self._found(header, state, i, blob))
            hint = count  # not there: search the run
        if hint < count:  # first read only the entry where the last match was
            i = first + hint
            if blob is not None:
                at, end = _U32x2.unpack_from(blob, 4 * i)
            else:
                raw = self._source.extra_bytes(tx_id, 4 * i, 8)
                if len(raw) != 8:
                    raise _corrupt(tx_id, b"<entries tree>")
                at, end = _U32x2.unpack(raw)
            buf = read(tx_id, at, end - at)
            if len(buf) != end - at or (len(buf) < head and not coded):
                raise _corrupt(tx_id, suffix)
            if coded:  # a front-coded key: decided here when the suffix is all stored
                found = _coded_match(buf, key_len, suffix, i % self._codec.restart == 0)
                kind, k1 = found if found is not None else (0, -1)
            else:
                kind, klen, vlen = _unpack_entry_head(buf)
                k1 = head + klen
                if not (klen == key_len and buf[k1 - cut : k1] == suffix and k1 + vlen == len(buf)):
                    k1 = -1
            if k1 >= 0:
                if kind == KIND_DELETE:
                    return None
                return i, buf[k1:], self._found(header, state, i, blob)
        if coded:
            return self._find_coded(header, state, first, count, key_len, suffix, blob)
        table = _positions(count + 1)
        if blob is not None:
            positions = table.unpack_from(blob, 4 * first)
        else:  # read only the run's positions, not the whole entries tree
            raw = self._source.extra_bytes(tx_id, 4 * first, table.size)
            if len(raw) != table.size:
                raise _corrupt(tx_id, b"<entries tree>")
            positions = table.unpack(raw)
        start = positions[0]
        buf = read(tx_id, start, positions[-1] - start)
        if len(buf) != positions[-1] - start or positions[-1] < start:
            raise _corrupt(tx_id, suffix)
        unpack = _unpack_entry_head
        for i in range(count):
            p = positions[i] - start
            try:
                kind, klen, vlen = unpack(buf, p)
            except struct.error:
                raise _corrupt(tx_id, suffix) from None
            if klen != key_len:
                continue
            k1 = p + head + klen
            if buf[k1 - cut : k1] != suffix:
                continue
            self._hint(suffix, i)
            if kind == KIND_DELETE:
                return None
            return first + i, buf[k1 : k1 + vlen], self._found(header, state, first + i, blob)
        return None

    def _hint(self, suffix: bytes, i: int) -> None:
        """Remember that ``suffix`` matched at run ordinal ``i`` (:meth:`find_and_prove`)."""
        hints = self._run_hints
        if len(hints) >= 1024:
            hints.clear()
        hints[suffix] = i

    def _found(self, header: TxHeader, state: State, index: int, blob: bytes | None) -> EntryProof:
        """The proof of entry ``index`` (a set entry) that :meth:`find_and_prove` found."""
        tx_id = header.tx_id
        return EntryProof(
            header, index, False, self._entry_path(tx_id, header.n_entries, index, blob),
            self._tx_path(tx_id, state.tx_id), state.tx_id,
        )

    def _find_coded(
        self, header: TxHeader, state: State, first: int, count: int, key_len: int, suffix: bytes,
        blob: bytes | None,
    ) -> tuple[int, bytes, EntryProof] | None:
        """:meth:`find_and_prove`'s search of the whole run, when keys are front-coded: the run
        is decoded from the restart before it (:func:`kvcore.runs.read_run`)."""
        src = self._source
        _pos, entries = read_run(
            self._codec, src.payload_bytes, src.extra_bytes, header.tx_id, first, count, blob, suffix
        )
        for i, (kind, key, value) in enumerate(entries):
            if len(key) != key_len or not key.endswith(suffix):
                continue
            self._hint(suffix, i)
            if kind == KIND_DELETE:
                return None
            return first + i, value, self._found(header, state, first + i, blob)
        return None

    def _entry_path(self, tx_id: int, n: int, index: int, blob: bytes | None) -> list[bytes]:
        """PATH(index, entries) of a transaction (RFC 9162 2.1.3.1, leaf-side first), read
        bottom-up from the stored level-order nodes (see :meth:`_path_part`).

        Its part from level _UPPER_FROM up depends only on ``index >> _UPPER_FROM`` and is
        shared by 2^_UPPER_FROM neighbouring entries: it is cached (up to 16,384 parts of a
        few hundred bytes)."""
        low = self._low
        levels, lower, upper_levels = _path_levels(n, low)[:3]
        path = self._low_path(tx_id, n, index, blob) if low else []
        if not upper_levels:
            path += self._path_part(tx_id, n, index >> low, levels, blob)
            return path
        path += self._path_part(tx_id, n, index >> low, lower, blob)
        uppers = self._path_uppers
        key = (tx_id, index >> _UPPER_FROM)
        upper = uppers.get(key)
        if upper is None:
            upper = tuple(self._path_part(tx_id, n, index >> _UPPER_FROM, upper_levels, blob))
            if len(uppers) >= 16384:
                uppers.clear()
            uppers[key] = upper
        path += upper
        return path

    def _path_part(
        self, tx_id: int, n: int, fn: int, levels: tuple[tuple[int, int, int, int], ...], blob: bytes | None
    ) -> list[bytes]:
        """The path's siblings at ``levels`` (consecutive, from the lowest; ``fn`` is the
        node's index at the first of them): at each level one stored complete node, except at
        most one incomplete subtree at the right edge (memoized); the rightmost node of a
        level may have no sibling (it is promoted, and the path has nothing for it).

        From the transaction's ``extra`` when it is in memory (``blob``); otherwise without
        loading it (a proof needs ~log2(n) of its ~2n nodes): the small top levels come from
        a per-transaction cache, each lower level's sibling is one 32-byte read."""
        path: list[bytes] = []
        append = path.append
        if blob is not None:
            for off, complete, last, level in levels:
                sib = fn ^ 1
                if sib < complete:
                    p = off + sib * HASH_SIZE
                    append(blob[p : p + HASH_SIZE])
                elif sib <= last:
                    append(self._partial_subtree(tx_id, n, sib << level, blob))
                fn >>= 1
            return path
        top_level, top_start, top_size = _path_levels(n, self._low)[3:6]
        top = self._path_top(tx_id, top_start, top_size)
        read = self._source.extra_bytes
        for off, complete, last, level in levels:
            sib = fn ^ 1
            if sib < complete:
                p = off + sib * HASH_SIZE
                if level >= top_level:
                    p -= top_start
                    append(top[p : p + HASH_SIZE])
                else:
                    h = read(tx_id, p, HASH_SIZE)
                    if len(h) != HASH_SIZE:
                        raise _corrupt(tx_id, b"<entries tree>")
                    append(h)
            elif sib <= last:
                append(self._partial_subtree(tx_id, n, sib << level, None))
            fn >>= 1
        return path

    def _low_path(self, tx_id: int, n: int, index: int, blob: bytes | None) -> list[bytes]:
        """The path's siblings below the stored levels (:attr:`Codec.stored_from`): all in the
        entry's block, recomputed from its entries (:meth:`_block`)."""
        low = self._low
        depth = min(low, (n - 1).bit_length())
        if not depth:
            return []
        b = index >> low
        nodes = self._block(tx_id, n, b, blob)
        size = min(1 << low, n - (b << low))
        starts = _block_starts(size)
        local = index - (b << low)
        path: list[bytes] = []
        for level in range(depth):
            sib = (local >> level) ^ 1
            s = sib << level
            if s >= size:  # the rightmost node of its level, promoted: no sibling
                continue
            if s + (1 << level) <= size:
                p = (starts[level] + sib) * HASH_SIZE
                path.append(nodes[p : p + HASH_SIZE])
            else:  # an incomplete subtree at the block's (the transaction's) right edge
                path.append(subtree_hash(_block_reader(nodes, starts), s, size))
        return path

    def _block(self, tx_id: int, n: int, b: int, blob: bytes | None) -> bytes:
        """The unstored levels of block ``b`` of a transaction's entries tree, in level order
        (its ``2^stored_from`` entries read, decoded and hashed: :func:`kvcore.runs.block_of`);
        the last _BLOCKS blocks are kept."""
        hit = self._blocks.get((tx_id, b))
        if hit is None:
            self._block_entries(tx_id, n, b, blob)
            hit = self._blocks[(tx_id, b)]
        return hit

    def _block_entries(self, tx_id: int, n: int, b: int, blob: bytes | None) -> list[tuple[int, bytes, bytes]]:
        """The entries of block ``b`` of a transaction, read and decoded; its unstored levels
        are computed and kept on the way (:meth:`_block`)."""
        src = self._source
        entries, nodes = block_of(self._codec, src.payload_bytes, src.extra_bytes, tx_id, n, b, blob, self.erased)
        blocks = self._blocks
        if len(blocks) >= _BLOCKS:
            blocks.clear()
        blocks[(tx_id, b)] = nodes
        return entries

    def _node_reader(self, tx_id: int, n: int, blob: bytes | None) -> Callable[[int, int], bytes]:
        """Complete subtree (level, index) of a transaction's entries tree: from its stored
        ``extra`` (``blob`` when in memory, else one read), or recomputed below the stored
        levels (:meth:`_block`)."""
        low = self._low
        offsets = _path_levels(n, low)[6]
        read = self._source.extra_bytes

        def node(level: int, i: int) -> bytes:
            if level < low:
                b = (i << level) >> low
                starts = _block_starts(min(1 << low, n - (b << low)))
                p = (starts[level] + i - (b << (low - level))) * HASH_SIZE
                return self._block(tx_id, n, b, blob)[p : p + HASH_SIZE]
            p = offsets[level] + i * HASH_SIZE
            if blob is not None:
                return blob[p : p + HASH_SIZE]
            h = read(tx_id, p, HASH_SIZE)
            if len(h) != HASH_SIZE:
                raise _corrupt(tx_id, b"<entries tree>")
            return h

        return node

    def _path_top(self, tx_id: int, start: int, size: int) -> bytes:
        """The stored top levels of a transaction's entries tree (a few KB; cached)."""
        tops = self._path_tops
        top = tops.get(tx_id)
        if top is None:
            top = self._source.extra_bytes(tx_id, start, size)
            if len(top) != size:
                raise _corrupt(tx_id, b"<entries tree>")
            if len(tops) >= 2048:  # at most 16 MB
                tops.clear()
            tops[tx_id] = top
        return top

    def _partial_subtree(self, tx_id: int, n: int, start: int, blob: bytes | None) -> bytes:
        """MTH(entries[start:n]) of a transaction: an incomplete right-edge subtree (memoized;
        it never changes). Its O(log n) complete parts come from the cached ``extra`` or are
        read one by one."""
        memo = self._partials
        h = memo.get((tx_id, start))
        if h is not None:
            return h
        h = subtree_hash(self._node_reader(tx_id, n, blob), start, n)
        if len(memo) >= 8192:
            memo.clear()
        memo[(tx_id, start)] = h
        return h

    def _tx_path(self, tx_id: int, size: int) -> list[bytes]:
        """PATH(tx_id - 1, ledger tree of ``size`` transactions), cached: for a committed
        ``size`` it never changes (the tree only grows)."""
        cache = self._tx_paths
        key = (tx_id, size)
        hit = cache.get(key)
        if hit is None:
            hit = tuple(merkle.inclusion_path(tx_id - 1, size, self._source.tx_subtree_hash))
            if len(cache) >= 1024:  # one per transaction and state proven: a growing ledger
                cache.clear()  # makes new states all the time, most are never asked for again
            cache[key] = hit
        return list(hit)

    def _extra_entry(self, tx_id: int, n: int) -> _Extra:
        """A transaction's stored positions and entries-tree nodes, with a memo of its partial
        subtree hashes (cached in memory, bounded by _EXTRA_CACHE_BYTES)."""
        cache = self.extra_cache
        hit = cache.get(tx_id)
        if hit is not None:
            cache.move_to_end(tx_id)
            return hit
        size = self._codec.extra_size(n)
        blob = self._source.extra_bytes(tx_id, 0, size)
        if len(blob) != size:
            raise _corrupt(tx_id, b"<entries tree>")
        hit = (blob, {}, level_starts(n))
        with self._extra_lock:
            cache[tx_id] = hit
            cache.nbytes += len(blob)
            while cache.nbytes > _EXTRA_CACHE_BYTES and len(cache) > 1:
                _, (old, _memo, _starts) = cache.popitem(last=False)
                cache.nbytes -= len(old)
        return hit

    def extra(self, tx_id: int, n: int) -> bytes:
        """The whole stored ``extra`` of transaction ``tx_id`` of ``n`` entries (its entries'
        positions, then its entries tree: :mod:`kvcore.payload`), kept in :attr:`extra_cache`
        (the ledger reads runs of entries with it)."""
        return self._extra_entry(tx_id, n)[0]

    def _entries_subtree(self, tx_id: int, n: int) -> Callable[[int, int], bytes]:
        """MTH(entries[a:b]) of a transaction, from its stored level-order nodes."""
        blob, memo, _starts = self._extra_entry(tx_id, n)
        node = self._node_reader(tx_id, n, blob)

        def sub(a: int, b: int) -> bytes:
            size = b - a
            if size & (size - 1) == 0 and a % size == 0:
                return node(size.bit_length() - 1, a // size)
            k = (a, b)
            h = memo.get(k)
            if h is None:
                h = memo[k] = subtree_hash(node, a, b)
            return h

        return sub

    def prove_entries(
        self, tx_id: int, indices: Iterable[int], state: State | None = None
    ) -> EntriesProof:
        """:meth:`kvcore.Ledger.prove_entries`: entries ``indices`` of ``tx_id`` in one proof."""
        check_tx(tx_id, self._source.tx_id)
        try:
            idx = sorted(set(indices))
        except TypeError:  # not iterable, or not comparable: not integers
            raise InvalidInputError("entry indices must be integers") from None
        header = self._source.header(tx_id)
        n = header.n_entries
        if not idx or any(type(i) is not int for i in idx) or idx[0] < 0 or idx[-1] >= n:
            raise InvalidInputError(f"entry indices must be within 0..{n - 1} of transaction {tx_id}")
        state = self._resolve_state(state, tx_id)
        path = merkle.multi_path(idx, n, self._proof_subtree(tx_id, n))
        return EntriesProof(header, idx, path, self._tx_path(tx_id, state.tx_id), state.tx_id)

    def _proof_subtree(self, tx_id: int, n: int) -> Callable[[int, int], bytes]:
        """MTH(entries[a:b]) of a transaction for a proof: from its in-memory ``extra`` (see
        :meth:`_proof_extra`), else reading only the stored nodes asked for."""
        if self._proof_extra(tx_id, n) is not None:
            return self._entries_subtree(tx_id, n)
        node = self._node_reader(tx_id, n, None)

        def sub(a: int, b: int) -> bytes:
            size = b - a
            if size & (size - 1) == 0 and a % size == 0:
                return node(size.bit_length() - 1, a // size)
            if b == n:  # in an RFC 9162 tree only right-edge subtrees are incomplete
                return self._partial_subtree(tx_id, n, a, None)
            return subtree_hash(node, a, b)

        return sub

    def prove_consistency(self, old_tx_id: int, new_tx_id: int | None = None) -> ConsistencyProof:
        """:meth:`kvcore.Ledger.prove_consistency`: the ledger at ``new_tx_id`` (default: now)
        extends the ledger at ``old_tx_id``."""
        count = self._source.tx_id
        new = count if new_tx_id is None else new_tx_id
        for t in (old_tx_id, new):
            if type(t) is not int or not 0 <= t <= count:
                raise TxNotFoundError(f"transaction {t!r} does not exist")
        if old_tx_id > new:
            raise InvalidInputError(f"old state {old_tx_id} is newer than {new}")
        return ConsistencyProof(
            old_tx_id, new, merkle.consistency_path(old_tx_id, new, self._source.tx_subtree_hash)
        )


_positions = positions_table
_BLOCKS = 16384  # recomputed entries-tree blocks kept (format 2: ~1 KB each)


def _block_starts(size: int) -> list[int]:
    """Where each level of a block of ``size`` entries begins in its nodes (cached)."""
    starts = _BLOCK_STARTS.get(size)
    if starts is None:
        starts = _BLOCK_STARTS[size] = level_starts(size)
    return starts


_BLOCK_STARTS: dict[int, list[int]] = {}


def _block_reader(nodes: bytes, starts: list[int]) -> Callable[[int, int], bytes]:
    """Complete subtree (level, index) within a block, from its recomputed ``nodes``."""

    def node(level: int, i: int) -> bytes:
        p = (starts[level] + i) * HASH_SIZE
        return nodes[p : p + HASH_SIZE]

    return node
_U32x2 = struct.Struct(">II")


def _coded_match(buf: bytes, key_len: int, suffix: bytes, restart: bool) -> tuple[int, int] | None:
    """(kind, where the value starts) of the front-coded entry ``buf`` (format v2) if its key
    is ``key_len`` bytes long and ends with ``suffix`` within its stored part; None if not, or
    if that cannot be told without the entries before it (or the bytes are not an entry: the
    run's decoding then says so)."""
    try:
        kind, shared, slen, vlen, k0 = payload_v2.head_at(buf, 0)
    except ValueError:
        return None
    k1 = k0 + slen
    cut = len(suffix)
    if shared + slen != key_len or cut > slen or k1 + vlen != len(buf) or kind > 1 or (restart and shared):
        return None
    return (kind, k1) if buf[k1 - cut : k1] == suffix else None


_Levels = tuple[tuple[int, int, int, int], ...]
_Layout = tuple[_Levels, _Levels, _Levels, int, int, int, tuple[int, ...]]
_PATH_LEVELS: dict[tuple[int, int], _Layout] = {}
_PATH_TOP_BYTES = 8192  # the top levels of an entries tree kept per transaction for proofs
_UPPER_FROM = 8  # inclusion paths are cached from this level up, per 2^_UPPER_FROM entries


def _path_levels(n: int, low: int = 0) -> _Layout:
    """The layout of an entries tree of ``n`` leaves in its stored ``extra`` (which holds its
    levels from ``low`` up), for proofs: per stored level below the root (byte offset of the
    level, its count of complete nodes, the index of its last node, the level); those levels
    split below and from _UPPER_FROM; the first level of the top (the levels whose nodes fit
    in _PATH_TOP_BYTES together) and that top's byte offset and size; the byte offset each
    level would begin at (the stored levels' are right: ``offsets[level] + i * HASH_SIZE`` is
    node ``i`` of a stored level). Cached."""
    layout = _PATH_LEVELS.get((n, low))
    if layout is None:
        starts = level_starts(n)
        first = starts[min(low, len(starts) - 1)]  # nodes not stored, before the first stored
        base = 4 * (n + 1) - first * HASH_SIZE
        offsets = tuple(base + st * HASH_SIZE for st in starts)
        levels = tuple(
            (offsets[lv], n >> lv, (n - 1) >> lv, lv) for lv in range(low, (n - 1).bit_length())
        )
        top = min(low, len(starts) - 1)
        while (starts[-1] - starts[top]) * HASH_SIZE > _PATH_TOP_BYTES:
            top += 1
        layout = (
            levels, tuple(lv for lv in levels if lv[3] < _UPPER_FROM), tuple(lv for lv in levels if lv[3] >= _UPPER_FROM),
            top, offsets[top], (starts[-1] - starts[top]) * HASH_SIZE, offsets,
        )
        if len(_PATH_LEVELS) >= 4096:
            _PATH_LEVELS.clear()
        _PATH_LEVELS[(n, low)] = layout
    return layout
