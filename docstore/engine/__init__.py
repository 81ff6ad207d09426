"""The engine: the one owner of a database's ledger, derived state, commit lock, signing keys
and trust tracker (:mod:`.engine`), and the derived state itself (:mod:`.state`). Collections,
transactions and proofs work through it; nothing else touches the ledger or the state."""
