"""How a document is stored: flattened to (pointer, encoded value) properties (:mod:`.flatten`),
as ledger entries under keys that name collection, id, revision and pointer (:mod:`.records`),
with ids and collection names docstore accepts (:mod:`.ids`). Pure functions: no ledger, no I/O.
Specified in docs/documents.md."""
