"""Transactions: the embedded one (:mod:`.transaction`), the validation and staging a
collection inside any transaction shares with the remote one (:mod:`.staging`), and optimistic
transactions committed in one call, as a remote client sends them (:mod:`.one_call`)."""
