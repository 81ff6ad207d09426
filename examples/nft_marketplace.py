"""An NFT marketplace on immudoc: every sale is one atomic multi-document transaction, a
double purchase of the same token has exactly one winner, and the ledger proves who owned a
token at any past transaction.

    python examples/nft_marketplace.py [DIRECTORY]

The database is created in DIRECTORY (default: a temporary directory, removed at the end).
"""

from __future__ import annotations

import os
import sys
import tempfile
import threading

import docstore


class SaleError(Exception):
    """The sale cannot happen (not listed, not enough funds)."""


# Each transaction records its principal (``user=``: on a server, the authenticated token's
# name instead) and what it was, so the provenance below says who did what.
def mint(db: docstore.Database, token_id: str, creator: str, title: str) -> int:
    with db.transaction(user=creator, reason=f"mint {token_id}") as tx:
        tx["tokens"].insert({"_id": token_id, "title": title, "creator": creator, "owner": creator, "price": None})
    return tx.tx_id


def list_for_sale(db: docstore.Database, token_id: str, seller: str, price: int) -> int:
    with db.transaction(user=seller, reason=f"list {token_id} at {price}") as tx:
        token = tx["tokens"].get(token_id)
        if token["owner"] != seller:
            raise SaleError(f"{seller} does not own {token_id}")
        tx["tokens"].update(token_id, {"$set": {"price": price}})
    return tx.tx_id


def buy(db: docstore.Database, token_id: str, buyer: str, before_commit: threading.Barrier | None = None) -> int:
    """One atomic transaction over four documents: token, seller, buyer, and a new order."""
    with db.transaction(user=buyer, reason=f"buy {token_id}") as tx:
        token = tx["tokens"].get(token_id)
        price, seller = token["price"], token["owner"]
        if price is None:
            raise SaleError(f"{token_id} is not for sale")
        if tx["accounts"].get(buyer)["balance"] < price:
            raise SaleError(f"{buyer} cannot afford {price}")
        tx["tokens"].update(token_id, {"$set": {"owner": buyer, "price": None}})
        tx["accounts"].update(seller, {"$inc": {"balance": price}})
        tx["accounts"].update(buyer, {"$inc": {"balance": -price}})
        tx["orders"].insert({"token": token_id, "seller": seller, "buyer": buyer, "price": price})
        if before_commit is not None:
            before_commit.wait()  # both buyers have read the listing before either commits
    return tx.tx_id


def transfer(db: docstore.Database, token_id: str, sender: str, recipient: str) -> int:
    with db.transaction(user=sender, reason=f"give {token_id} to {recipient}") as tx:
        if tx["tokens"].get(token_id)["owner"] != sender:
            raise SaleError(f"{sender} does not own {token_id}")
        tx["tokens"].update(token_id, {"$set": {"owner": recipient, "price": None}})
        tx["orders"].insert({"token": token_id, "seller": sender, "buyer": recipient, "price": 0, "gift": True})
    return tx.tx_id


def main(directory: str) -> None:
    path = os.path.join(directory, "market-db")
    print(f"database: {path}")
    with docstore.open(path) as db:
        db.create_collection("tokens", indexes=["owner"])
        db.create_collection("accounts")
        db.create_collection("orders", indexes=["token"])
        db["accounts"].insert_many(
            [{"_id": name, "balance": balance} for name, balance in [("ada", 100), ("bob", 500), ("cy", 500), ("dee", 0)]]
        )

        print("\n== mint and list")
        print(f"ada mints nft-1 (transaction {mint(db, 'nft-1', 'ada', 'Lighthouse at dawn')})")
        print(f"ada lists nft-1 for 120 (transaction {list_for_sale(db, 'nft-1', 'ada', 120)})")
        minted_at = db.state()  # the buyer's wallet remembers this state ...
        market_key = db.verifier_key()  # ... and pins the marketplace's published verifier key

        print("\n== a sale: token, seller, buyer and order change in one transaction")
        sold_at = buy(db, "nft-1", "bob")
        print(f"bob buys nft-1 (transaction {sold_at}):",
              {a["_id"]: a["balance"] for a in db["accounts"].find({"_id": {"$in": ["ada", "bob"]}})})
        try:
            buy(db, "nft-1", "cy")
        except SaleError as e:
            print("cy tries to buy it too:", e, "(nothing written)")

        print("\n== a double purchase: two threads, two transactions, one token")
        list_for_sale(db, "nft-1", "bob", 300)
        barrier = threading.Barrier(2)
        outcome: dict[str, str] = {}

        def attempt(buyer: str) -> None:
            try:
                outcome[buyer] = f"won (transaction {buy(db, 'nft-1', buyer, barrier)})"
            except docstore.ConflictError:
                outcome[buyer] = "lost: ConflictError (the other purchase committed first; nothing written)"

        threads = [threading.Thread(target=attempt, args=(b,)) for b in ("cy", "dee")]
        dee_funds = db["accounts"].update("dee", {"$inc": {"balance": 400}})
        print("dee now has", dee_funds["balance"])
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for buyer in ("cy", "dee"):
            print(f"{buyer}: {outcome[buyer]}")
        winners = [b for b in outcome if outcome[b].startswith("won")]
        assert len(winners) == 1, outcome
        winner = winners[0]
        owner = db["tokens"].get("nft-1")["owner"]
        print(f"exactly one winner: {winner}; nft-1 is owned by {owner};",
              "orders for nft-1:", db["orders"].count({"token": "nft-1"}))
        assert owner == winner

        print("\n== a gift")
        print(f"{winner} gives nft-1 to ada (transaction {transfer(db, 'nft-1', winner, 'ada')})")

        print("\n== provenance of nft-1, from its history")
        for rev in db["tokens"].history("nft-1"):
            token = rev.document
            price = "" if token["price"] is None else f", listed at {token['price']}"
            print(f"revision {rev.revision} (transaction {rev.tx_id}): owned by {token['owner']}{price}"
                  f"  [{rev.user}: {rev.reason}]")

        print(f"\n== who owned nft-1 at transaction {sold_at}? A proof, checked against the wallet's state")
        proof = db["tokens"].prove("nft-1", "/owner", at_tx=sold_at, known_state=minted_at)
        text = proof.to_json()
        print(f"proof: {len(text)} bytes, revision {proof.revision}, claim {proof.claim!r}")

    # Verification needs only the proof text, the state the wallet saved before the sale and the
    # marketplace's key: the proof is relative to a newer state, which that key signed.
    owner_then = docstore.verify(docstore.proofs.load(text), minted_at, verifier_keys=[market_key])
    print(f"verified offline: at transaction {sold_at} nft-1 was owned by {owner_then}")
    assert owner_then == "bob"
    forged = text.replace('"claim":"bob"', '"claim":"cy"')
    try:
        docstore.verify(forged, minted_at, verifier_keys=[market_key])
    except docstore.VerificationError as e:
        print("a forged claim that cy owned it:", e)
    print("\ndone")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        os.makedirs(sys.argv[1], exist_ok=True)
        main(sys.argv[1])
    else:
        with tempfile.TemporaryDirectory(prefix="immudoc-nft-") as tmp:
            main(tmp)
