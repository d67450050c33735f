// Package secret keeps credentials out of sight: a Secret type that redacts
// itself wherever it could be printed, and a Box that encrypts what is
// stored.
//
// Invariants:
//   - A stored credential is AES-256-GCM ciphertext with a fresh random
//     nonce, tagged with the id of the key that sealed it ("v1.<key id>.<data>").
//   - Every ciphertext is bound by associated data to its table, column and
//     row (AAD), so a ciphertext copied to another row or field fails to open.
//   - A Box opens ciphertext sealed by any of its keys and seals only with its
//     primary key; rotating keys is re-sealing every stored value with a Box
//     whose primary key is the new one (see store.RotateKey).
//   - A Secret never shows its value through fmt, encoding/json or log/slog;
//     only Reveal does, at the one place that hands it to a protocol.
package secret
