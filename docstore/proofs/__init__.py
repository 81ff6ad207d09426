"""Proofs of documents, properties and collection definitions, and their pure verifier.

>>> proof = db["trials"].prove(doc_id, "/dosage/mg")       # doctest: +SKIP
>>> text = proof.to_json()                                 # hand it to an auditor
>>> docstore.verify(docstore.proofs.load(text), trusted_state)
5.0
"""

from docstore.proofs.bundle import Property, Proof, from_dict, load
from docstore.proofs.verify import verify, verify_consistency

__all__ = ["Proof", "Property", "from_dict", "load", "verify", "verify_consistency"]
