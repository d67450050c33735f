// Package mailbox owns connected mailboxes: their IMAP settings and check,
// the provider presets, the folders chosen for sync, and the outgoing block
// with its mirrored CRM sender. It imports outgoing for the SMTP check and
// the sender records.
//
// Invariants (as they land with the Mailboxes issue):
//   - A mailbox is saved only after its IMAP login succeeded.
//   - A mailbox with outgoing enabled and its mirrored sender are created,
//     changed and removed in one transaction: never one without the other.
//   - A user sees only their own mailboxes; another user's id answers as a
//     missing one.
package mailbox
