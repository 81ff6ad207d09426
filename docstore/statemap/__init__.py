"""The state map: an authenticated ordered map over a database's current state.

It holds every live document ``(collection, id) -> its current revision``, every secondary
index entry and every collection definition, as a history-independent Merkle B-tree whose
node boundaries follow the hashes of the keys (the same keys always give the same tree, in
whatever order they were written). Its root is committed in every transaction header
(header version 2), so a proof from it shows that a document is the current one, that a
document does not exist, or that a range of keys (a query's index range) is complete.

- :mod:`~docstore.statemap.hashing`: keys, values and hashes, byte for byte (pure; the
  verifier's and the writer's);
- :mod:`~docstore.statemap.nodes`: a node as stored in LMDB;
- :mod:`~docstore.statemap.tree`: the map in ``state.lmdb``: a batched update per transaction;
- :mod:`~docstore.statemap.prove`: range and key proofs;
- :mod:`~docstore.statemap.verify`: their pure verifier.

Specified in docs/proofs.md ("The state map").
"""
